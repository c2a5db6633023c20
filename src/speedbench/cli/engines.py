"""``speedbench engines`` and ``speedbench serve-mock``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Optional

import typer

from speedbench.cli.common import fail, one_line, user_errors
from speedbench.cli.options import EngineOpt


def register(app: typer.Typer) -> None:
    app.command()(engines)
    app.command("serve-mock")(serve_mock)


def engines() -> None:
    """List registered engines, their capabilities and SD methods, and whether they are installed."""
    from speedbench.engines import registry
    from speedbench.report.console import engines_table, make_console

    make_console().print(engines_table(registry.listing()))


def serve_mock(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port (printed)")] = 8000,
    k: Annotated[int, typer.Option("--k", "--draft-length", help="draft length")] = 3,
    acceptance: Annotated[str, typer.Option(help="conditional acceptance per position a1,...,ak")] = "0.8,0.6,0.4",
    ttft_ms: Annotated[float, typer.Option()] = 50.0,
    step_ms: Annotated[float, typer.Option(help="time per verification step")] = 10.0,
    output_len: Annotated[Optional[int], typer.Option(help="tokens per reply (default: request max_tokens)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    reasoning_tokens: Annotated[
        int, typer.Option(help="a reasoning model: the first N tokens of each chat reply stream as thinking")
    ] = 0,
    reasoning_field: Annotated[
        str, typer.Option(help="the delta field thinking streams in: reasoning_content (SGLang) or reasoning (vLLM)")
    ] = "reasoning_content",
    engine_opt: EngineOpt = [],  # noqa: B006
) -> None:
    """Serve the mock SD engine over OpenAI-compatible HTTP (SSE streaming, /metrics)."""
    from speedbench.config import parse_engine_options
    from speedbench.engines.mock_server import ServeMockSettings, serve

    try:
        opts: dict[str, Any] = {
            "k": k,
            "acceptance": acceptance,
            "ttft_ms": ttft_ms,
            "step_ms": step_ms,
            "seed": seed,
            "output_len": output_len,
            "reasoning_tokens": reasoning_tokens,
            "reasoning_field": reasoning_field,
        }
        opts.update(parse_engine_options(engine_opt))
        settings = ServeMockSettings.from_options(opts)
    except user_errors() as e:
        fail(one_line(e))
        return
    try:
        asyncio.run(serve(settings, host, port))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
