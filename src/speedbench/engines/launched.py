"""Base for engines that speedbench can launch itself or attach to (vLLM, llama.cpp, SGLang, TRT-LLM).

Attach: ``--base-url`` of a running server.  Launch (``--launch``): the adapter builds the server's
command line from ``--model``, ``--sd``, ``--draft-model``, ``--draft-length``, ``--concurrency`` and
``--server-arg`` (repeatable, passed through verbatim), starts it on a free loopback port, waits for
its health URL, keeps its log as ``<log dir>/server.log`` (the run directory) and stops it on ``close()``;
one launched server can serve several runs in a row (``--concurrency`` becomes ``spec.max_concurrency``,
the largest batch it must take).  Both modes then stream through the shared OpenAI client; adapters
override only the hooks.  ``-E startup_timeout=SECONDS`` (900), ``-E port=N`` (a free one).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field

from speedbench.config import EngineSpec
from speedbench.engines.errors import EngineStartError
from speedbench.engines.openai_http import OpenAIClient, OpenAIOptions, root_url
from speedbench.engines.server_process import ServerProcess, free_port
from speedbench.errors import InvalidInput

DEFAULT_MAX_CONCURRENCY = 32


class LaunchedOptions(OpenAIOptions):
    """``-E`` options of every launchable engine (adapters add their own)."""

    startup_timeout: float = Field(900.0, gt=0)  # seconds to wait for the server's health URL
    port: int = Field(0, ge=0, le=65535)  # 0: a free loopback port


class LaunchedEngine(OpenAIClient):
    """An OpenAI-compatible engine server that speedbench may start (``spec.launch``) or attach to.
    A launched server is sized for ``spec.max_concurrency`` and serves every run until ``close()``."""

    name = "server"
    server_name = "server"  # for messages: "vLLM", "llama-server", ...
    health_path = "/health"
    default_server_bin: str = ""
    Options: type[LaunchedOptions] = LaunchedOptions
    opts: LaunchedOptions
    sd: str  # every launchable engine declares a default (none)

    def __init__(self, spec: EngineSpec) -> None:
        self.launch = spec.launch
        self.draft_model = spec.draft_model
        self.concurrency = spec.max_concurrency or DEFAULT_MAX_CONCURRENCY
        self.server_bin = spec.server_bin or self.default_server_bin
        self.server_args = list(spec.server_args)
        self.launched_model = spec.model
        self.server: ServerProcess | None = None
        super().__init__(spec)  # options and --sd are checked there, then server_spec() below
        if self.launch:
            self.server = ServerProcess(
                self.server_name,
                self.server_command(),
                self.root_url + self.health_path,
                self.log_path,
                env=self.server_env(),
                startup_timeout_s=self.opts.startup_timeout,
                secrets=self.secrets,
            )

    def server_spec(self, spec: EngineSpec) -> EngineSpec:
        if not self.launch:
            return spec
        if spec.base_url:
            raise InvalidInput(
                "--launch starts its own server on a free port: drop --base-url "
                "(or drop --launch to attach to the server at --base-url)"
            )
        if not spec.model:
            raise InvalidInput(f"--launch needs --model (the model {self.server_name} should serve)")
        if self.sd in ("draft", "eagle", "eagle3") and not self.draft_model:
            raise InvalidInput(f"--sd {self.sd} needs --draft-model (the draft model or head)")
        contradiction = self.sd_contradiction()
        if contradiction is not None:
            raise InvalidInput(contradiction)
        self.port = self.opts.port or free_port()
        self.log_path = Path(spec.log_dir or tempfile.mkdtemp(prefix="speedbench-")) / "server.log"
        return spec.model_copy(
            update={"base_url": f"http://127.0.0.1:{self.port}/v1", "model": self.served_model_name()}
        )

    # ---- hooks ------------------------------------------------------------------------------
    # server arguments that turn SD on in this engine's server (a --server-arg among them with --sd none would
    # label a drafting server as not drafting)
    sd_server_args: tuple[str, ...] = ()

    def sd_contradiction(self) -> str | None:
        """Why ``--sd``/``-k`` contradict the launched server's own arguments (None: they agree), checked before
        the server starts.  Here: ``--sd none`` with a ``--server-arg`` that turns SD on."""
        given = [a for a in self.server_args if a.split("=", 1)[0] in self.sd_server_args]
        if self.sd == "none" and given:
            return (
                f"--sd none, but --server-arg {given[0].split('=', 1)[0]} turns SD on in the launched "
                f"{self.server_name} server: pass --sd METHOD and -k K so the run is labelled with what the server "
                "runs, or drop that server argument"
            )
        return None

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
        return root_url(self.base_url)

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
        d.update(draft_model=self.draft_model, launched=self.launch)
        if self.server is not None:
            d["server"] = {
                "command": self.server.command_line,
                "log": str(self.log_path),
                "startup_s": self.server.startup_s,
                "max_concurrency": self.concurrency,
            }
        return d


def require_model_path(engine: str, model: str) -> None:
    """Fail early, in one line, when a launch model path that looks local does not exist."""
    p = Path(model)
    if (model.startswith((".", "/", "~")) or p.suffix == ".gguf") and not p.expanduser().exists():
        raise EngineStartError(f"{engine}: model {model!r} does not exist; pass an existing path to --model")
