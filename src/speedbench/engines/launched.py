"""Base for engines that speedbench can launch itself or attach to (vLLM, llama.cpp, SGLang, TRT-LLM).

Attach: ``--base-url`` of a running server.  Launch (``--launch``): the adapter builds the server's
command line from ``--model``, ``--sd``, ``--draft-model``, ``--draft-length``, ``--concurrency`` and
``--server-arg`` (repeatable, passed through verbatim), starts it on a free loopback port, waits for
its health URL, keeps its log as ``<run dir>/server.log`` and stops it at the end.  Both modes then
stream through the shared OpenAI client; adapters override only the hooks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speedbench.engines.errors import EngineStartError
from speedbench.engines.openai_http import OpenAIEngine
from speedbench.engines.server_process import ServerProcess, free_port

SD_METHODS: tuple[str, ...] = ("none", "ngram", "draft", "eagle", "eagle3", "mtp")


class LaunchedEngine(OpenAIEngine):
    """An OpenAI-compatible engine server that speedbench may start (``launch=True``) or attach to."""

    name = "server"
    can_launch = True
    server_name = "server"           # for messages: "vLLM", "llama-server", ...
    health_path = "/health"
    sd_methods: tuple[str, ...] = SD_METHODS
    default_sd = "none"
    default_server_bin: str = ""

    def __init__(self, base_url: str | None = None, model: str | None = None, *, launch: bool = False,
                 sd: str | None = None, draft_model: str | None = None, draft_length: int | None = 3,
                 server_bin: str | None = None, server_args: Sequence[str] = (), log_dir: str | None = None,
                 concurrency: int = 32, options: dict[str, str] | None = None, **kw: Any) -> None:
        opts = dict(options or {})
        self.launch = launch
        self.sd = sd or self.default_sd
        if self.sd not in self.sd_methods:
            raise ValueError(f"--sd {self.sd!r} is not supported by engine {self.name!r} "
                             f"(choose one of: {', '.join(self.sd_methods)})")
        self.draft_model = draft_model
        self.k = int(draft_length if draft_length is not None else 3)
        self.concurrency = concurrency
        self.server_bin = server_bin or self.default_server_bin
        self.server_args = list(server_args)
        self.startup_timeout_s = float(opts.pop("startup_timeout", 900))
        self.server: ServerProcess | None = None
        self.launched_model = model
        if launch:
            if base_url:
                raise ValueError("--launch starts its own server on a free port: drop --base-url "
                                 "(or drop --launch to attach to the server at --base-url)")
            if not model:
                raise ValueError(f"--launch needs --model (the model {self.server_name} should serve)")
            if self.sd in ("draft", "eagle", "eagle3") and not draft_model:
                raise ValueError(f"--sd {self.sd} needs --draft-model (the draft model or head)")
            self.port = int(opts.pop("port", 0)) or free_port()
            base_url = f"http://127.0.0.1:{self.port}/v1"
            self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="speedbench-")) / "server.log"
            model = self.served_model_name()
        super().__init__(base_url=base_url, model=model, options=opts, draft_length=self.k, **kw)
        if launch:
            self.server = ServerProcess(self.server_name, self.server_command(), self.root_url + self.health_path,
                                        self.log_path, env=self.server_env(), startup_timeout_s=self.startup_timeout_s)

    # ---- hooks ------------------------------------------------------------------------------
    def served_model_name(self) -> str | None:
        """The model name requests carry when speedbench launched the server."""
        return self.launched_model

    def server_command(self) -> list[str]:
        raise NotImplementedError

    def server_env(self) -> dict[str, str]:
        return {}

    # ---- lifecycle ----------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    async def start(self) -> None:
        if self.server is not None:
            await self.server.start()
        try:
            await super().start()
        except BaseException:
            if self.server is not None:
                self.server.stop()
            raise

    async def close(self) -> None:
        await super().close()
        if self.server is not None:
            self.server.stop()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(sd=self.sd, k=self.k if self.sd != "none" else 0, draft_model=self.draft_model,
                 launched=self.launch)
        if self.server is not None or self.launch:
            d["server"] = {"command": self.server.command_line if self.server else None,
                           "log": str(self.log_path), "startup_s": self.server.startup_s if self.server else None}
        return d


def require_model_path(engine: str, model: str) -> None:
    """Fail early, in one line, when a launch model path that looks local does not exist."""
    p = Path(model)
    if (model.startswith((".", "/", "~")) or p.suffix == ".gguf") and not p.expanduser().exists():
        raise EngineStartError(f"{engine}: model {model!r} does not exist; pass an existing path to --model")
