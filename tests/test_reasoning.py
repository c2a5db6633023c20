"""Reasoning models: thinking streamed as ``delta.reasoning_content`` / ``delta.reasoning`` is output (counted,
timed, kept apart from the answer and out of the next turn's history), and ``-E enable_thinking`` switches it.

The parser on hand-written SSE; the option's request body; end to end, ``speedbench run --engine vllm`` against
``serve-mock --reasoning-tokens N`` (which logs the request bodies it receives with ``-E request_log``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from conftest import serve_mock, speedbench_cmd
from speedbench.config import EngineSpec
from speedbench.engines.base import Request
from speedbench.engines.mock import token_text
from speedbench.engines.openai import OpenAIEngine
from speedbench.engines.options import with_thinking
from speedbench.load.generator import send

# ---- the parser on hand-written SSE lines -----------------------------------------------------------------

ROLE = 'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
LINES = {
    "reasoning_content": [
        ROLE,
        'data: {"choices":[{"index":0,"delta":{"reasoning_content":"Let me"},"finish_reason":null}]}',
        'data: {"choices":[{"index":0,"delta":{"reasoning_content":" think."},"finish_reason":null}]}',
        'data: {"choices":[{"index":0,"delta":{"content":"Four"},"finish_reason":null}]}',
        'data: {"choices":[{"index":0,"delta":{"content":"."},"finish_reason":"stop"}]}',
    ],
    "reasoning": [  # newer vLLM; content null beside it, as servers that send every field write it
        ROLE,
        'data: {"choices":[{"index":0,"delta":{"reasoning":"Let me","content":null},"finish_reason":null}]}',
        'data: {"choices":[{"index":0,"delta":{"reasoning":" think.","content":null},"finish_reason":null}]}',
        'data: {"choices":[{"index":0,"delta":{"content":"Four"},"finish_reason":null}]}',
        'data: {"choices":[{"index":0,"delta":{"content":"."},"finish_reason":"stop"}]}',
    ],
    "both": [  # vLLM while renaming sends the same thought under both names: taken once
        ROLE,
        'data: {"choices":[{"index":0,"delta":{"reasoning":"Let me","reasoning_content":"Let me"}}]}',
        'data: {"choices":[{"index":0,"delta":{"reasoning":" think.","reasoning_content":" think."}}]}',
        'data: {"choices":[{"index":0,"delta":{"content":"Four"},"finish_reason":null}]}',
        'data: {"choices":[{"index":0,"delta":{"content":"."},"finish_reason":"stop"}]}',
    ],
}
USAGE = 'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}'


def _objs(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data: ")) for line in lines]


@pytest.mark.parametrize("kind", sorted(LINES))
def test_read_chunk_takes_thinking_as_output_tokens(kind: str) -> None:
    got = [OpenAIEngine._read_chunk(o) for o in _objs(LINES[kind])]
    assert got[0] == ([], None)  # the role chunk carries nothing
    chunks = [c for cs, _ in got for c in cs]
    assert [(c.n_tokens, c.text, c.reasoning) for c in chunks] == [
        (1, "", "Let me"),
        (1, "", " think."),
        (1, "Four", ""),
        (1, ".", ""),
    ]
    assert got[-1][1] == "stop"


def test_a_delta_with_thinking_and_answer_is_one_chunk_counted_by_the_one_rule() -> None:
    both = {"choices": [{"index": 0, "delta": {"reasoning_content": " so", "content": "Four"}}]}
    (c,), _ = OpenAIEngine._read_chunk(both)
    assert (c.n_tokens, c.text, c.reasoning, c.token_ids) == (1, "Four", " so", None)  # no ids: 1 per chunk
    both["choices"][0]["token_ids"] = [5, 151668, 9]  # ids (vLLM): the chunk's tokens, thinking and answer
    (c,), _ = OpenAIEngine._read_chunk(both)
    assert (c.n_tokens, c.text, c.reasoning) == (3, "Four", " so")
    # thinking alone with ids; a thought that is not a string is the server's fault
    (c,), _ = OpenAIEngine._read_chunk({"choices": [{"delta": {"reasoning": "hm"}, "token_ids": [1, 2]}]})
    assert (c.n_tokens, c.reasoning) == (2, "hm")
    with pytest.raises(TypeError, match="reasoning_content is int"):
        OpenAIEngine._read_chunk({"choices": [{"delta": {"reasoning_content": 3}}]})
    # the completions endpoint has no reasoning field
    (c,), _ = OpenAIEngine._read_chunk({"choices": [{"text": "x", "reasoning_content": "ignored"}]})
    assert (c.text, c.reasoning) == ("x", "")


async def _record(body: bytes, **spec: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Stream ``body`` from a one-route server through the client and the load generator's ``send``."""
    seen: list[dict[str, Any]] = []

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "m"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(body)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    eng = OpenAIEngine(EngineSpec(kind="openai", base_url=f"http://127.0.0.1:{runner.addresses[0][1]}/v1", **spec))
    try:
        await eng.start()
        req = Request("q1", "qa", 0, [{"role": "user", "content": "2+2?"}], max_tokens=8)
        return await send(eng, req, 10), seen
    finally:
        await eng.close()
        await runner.cleanup()


@pytest.mark.parametrize("kind", sorted(LINES))
def test_thinking_is_timed_and_counted_but_kept_out_of_the_answer(kind: str) -> None:
    body = "".join(line + "\n\n" for line in [*LINES[kind], USAGE, "data: [DONE]"]).encode()
    rec, seen = asyncio.run(_record(body))
    assert rec.ok, rec.error
    assert rec.reasoning_text == "Let me think." and rec.output_text == "Four."
    # four chunks, the first one thinking (TTFT is its arrival), each one token: the server's usage agrees
    assert rec.chunk_tokens == [1, 1, 1, 1] and len(rec.chunk_ns) == 4
    assert rec.completion_tokens == 4 and rec.chunk_tokens_exact
    assert "chat_template_kwargs" not in seen[0]  # -E enable_thinking unset: the server's default


# ---- -E enable_thinking -----------------------------------------------------------------------------------


def _engine(**options: str) -> OpenAIEngine:
    return OpenAIEngine(EngineSpec(kind="openai", base_url="http://127.0.0.1:1/v1", options=options))


def test_enable_thinking_is_sent_as_chat_template_kwargs() -> None:
    assert "chat_template_kwargs" not in _engine().body_extra
    assert _engine(enable_thinking="false").body_extra == {"chat_template_kwargs": {"enable_thinking": False}}
    assert _engine(enable_thinking="true").body_extra == {"chat_template_kwargs": {"enable_thinking": True}}
    # merged with an explicit body.chat_template_kwargs: its other keys kept, the same value accepted
    merged = _engine(enable_thinking="false", **{"body.chat_template_kwargs": '{"thinking_budget": 64}'})
    assert merged.body_extra == {"chat_template_kwargs": {"thinking_budget": 64, "enable_thinking": False}}
    same = _engine(enable_thinking="true", **{"body.chat_template_kwargs": '{"enable_thinking": true}'})
    assert same.body_extra == {"chat_template_kwargs": {"enable_thinking": True}}
    assert same.describe()["options"] == {"enable_thinking": "true"}


@pytest.mark.parametrize(
    "options, match",
    [
        (
            {"enable_thinking": "false", "body.chat_template_kwargs": '{"enable_thinking": true}'},
            "-E enable_thinking=false contradicts -E body.chat_template_kwargs (enable_thinking=true)",
        ),
        (
            {"enable_thinking": "true", "body.chat_template_kwargs": "[1]"},
            "-E enable_thinking=true: -E body.chat_template_kwargs is not a JSON object",
        ),
        ({"enable_thinking": "maybe"}, "-E enable_thinking=maybe: Input should be a valid boolean"),
    ],
)
def test_enable_thinking_that_cannot_be_sent_as_asked_is_refused(options: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError) as ei:
        _engine(**options)
    assert str(ei.value).startswith(match) and "\n" not in str(ei.value)


def test_enable_thinking_needs_the_chat_endpoint() -> None:
    with pytest.raises(ValueError, match="--endpoint completions sends a plain prompt"):
        OpenAIEngine(
            EngineSpec(
                kind="openai", base_url="http://x/v1", endpoint="completions", options={"enable_thinking": "false"}
            )
        )
    assert with_thinking({"top_p": 0.5}, None) == {"top_p": 0.5}


def test_launchable_engines_take_enable_thinking() -> None:
    from speedbench.engines.sglang import SGLangEngine
    from speedbench.engines.vllm import VLLMEngine

    for cls in (VLLMEngine, SGLangEngine):
        eng = cls(EngineSpec(kind=cls.name, base_url="http://127.0.0.1:1/v1", options={"enable_thinking": "false"}))
        assert eng.payload(Request("q", "c", 0, [{"role": "user", "content": "hi"}], max_tokens=4))[
            "chat_template_kwargs"
        ] == {"enable_thinking": False}


# ---- end to end: speedbench run against serve-mock --------------------------------------------------------

N_THINK = 5
OUTPUT_LEN = 16


def _run(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["run", "--engine", "vllm", "--base-url", url, "-n", "4", "--output-len", str(OUTPUT_LEN)]
    # attached: --sd labels what the server runs (the mock's k = 3 draft)
    args += ["--sd", "ngram", "-k", "3", "--warmup", "0", "--no-progress", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(speedbench_cmd(*args), capture_output=True, text=True, env=env, timeout=300, check=False)


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


def _bodies(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["body"] for line in log.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_run_against_a_reasoning_server(tmp_path: Path, field: str) -> None:
    log = tmp_path / "requests.jsonl"
    mock = ["--ttft-ms", "0", "--step-ms", "0", "--reasoning-tokens", str(N_THINK), "--reasoning-field", field]
    # no per-request stats: the figures per category come from the chunks, reasoning chunks included
    mock += ["-E", f"request_log={log}", "-E", "per_request_stats=false"]
    with serve_mock(*mock) as url:
        p = _run(url, tmp_path / "run")
    assert p.returncode == 0, p.stdout + p.stderr
    records = _records(tmp_path / "run")
    assert len(records) >= 4 and {r["turn"] for r in records} == {0, 1}  # the starter set has two-turn questions
    for r in records:
        assert r["error"] is None, r
        ids = r["output_token_ids"]
        assert len(ids) == OUTPUT_LEN == r["completion_tokens"] == sum(r["chunk_tokens"])
        # the mock's thinking is the reply's first N tokens, its answer the rest
        assert r["reasoning_text"] == "".join(map(token_text, ids[:N_THINK]))
        assert r["output_text"] == "".join(map(token_text, ids[N_THINK:]))
        # every step's chunk arrived, thinking ones too: chunk 0 (the prefill token, TTFT) is thinking
        assert r["chunk_tokens"][0] == 1 and len(r["chunk_ns"]) == len(r["chunk_tokens"])
        assert r["chunk_ns"] == sorted(r["chunk_ns"])

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["overall"]["errors"] == 0
    assert summary["sources"]["acceptance_per_category"] == "chunks"
    for cat, group in summary["per_category"].items():
        mine = [r for r in records if r["category"] == cat]
        assert group["steps"] == sum(len(r["chunk_tokens"]) - 1 for r in mine)
        assert group["accepted"] == sum(n - 1 for r in mine for n in r["chunk_tokens"][1:])
    # the server's counters count the same steps: the chunks (thinking included) are all of them
    delta = summary["counter_delta"]
    assert delta["steps"] == sum(len(r["chunk_tokens"]) - 1 for r in records)
    check = [i for i in summary["invariants"] if i["name"].startswith("chunks_vs_counter_delta")]
    assert check and all(i["ok"] for i in check), check

    # the next turn's history holds the answer only, never the thinking
    bodies = _bodies(log)
    assert len(bodies) == len(records)
    answers = {r["output_text"] for r in records}
    later = [b for b in bodies if len(b["messages"]) > 1]
    assert later
    for b in later:
        assistant = [m["content"] for m in b["messages"] if m["role"] == "assistant"]
        assert assistant and all(a in answers for a in assistant)
        sent = json.dumps(b)
        assert not any(r["reasoning_text"] in sent for r in records)
        assert "chat_template_kwargs" not in b  # enable_thinking unset: nothing sent


def test_enable_thinking_false_reaches_the_server_and_turns_thinking_off(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    mock = ["--ttft-ms", "0", "--step-ms", "0", "--reasoning-tokens", str(N_THINK), "-E", f"request_log={log}"]
    with serve_mock(*mock) as url:
        p = _run(url, tmp_path / "off", "-E", "enable_thinking=false")
    assert p.returncode == 0, p.stdout + p.stderr
    records = _records(tmp_path / "off")
    assert records
    for r in records:
        assert r["error"] is None and r["reasoning_text"] == ""
        assert r["output_text"] == "".join(map(token_text, r["output_token_ids"]))
        assert r["completion_tokens"] == sum(r["chunk_tokens"]) == OUTPUT_LEN
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in _bodies(log))
    manifest = json.loads((tmp_path / "off" / "manifest.json").read_text())
    assert "enable_thinking" in json.dumps(manifest)


def test_serve_mock_thinks_unless_told_not_to() -> None:
    """The mock server in process: the straddling step sends thinking and answer in one delta; a request with
    enable_thinking false and the completions route get no thinking; non-streaming replies carry it too."""
    from speedbench.engines.mock_server import ServeMockSettings, create_app

    settings = ServeMockSettings(
        ttft_ms=0, step_ms=0, k=3, acceptance=[1.0], reasoning_tokens=2, reasoning_field="reasoning"
    )

    async def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
        import aiohttp

        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        msgs = [{"role": "user", "content": "hi"}]

        async def deltas(path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
            async with s.post(f"{base}/{path}", json={"stream": True, "max_tokens": 6, **body}) as r:
                text = await r.text()
            objs = [json.loads(x[6:]) for x in text.split("\n\n") if x.startswith("data: {")]
            return [c.get("delta", c) for o in objs for c in o.get("choices", [])]

        try:
            async with aiohttp.ClientSession() as s:
                on = await deltas("chat/completions", {"messages": msgs})
                off = await deltas(
                    "chat/completions", {"messages": msgs, "chat_template_kwargs": {"enable_thinking": False}}
                )
                async with s.post(f"{base}/chat/completions", json={"messages": msgs, "max_tokens": 6}) as r:
                    plain = await r.json()
                completion = await deltas("completions", {"prompt": "hi"})
            return on, off, plain, completion
        finally:
            await runner.cleanup()

    on, off, plain, completion = asyncio.run(go())
    # acceptance 1.0, k 3: prefill 1 token, then a step of 4 (1 thinking + 3 answer), then 1
    assert set(on[1]) == {"reasoning"} and on[1]["reasoning"].count(" w") == 1
    assert set(on[2]) == {"reasoning", "content"} and on[2]["reasoning"].count(" w") == 1
    assert on[2]["content"].count(" w") == 3 and set(on[3]) == {"content"}
    assert not any("reasoning" in d for d in off)
    message = plain["choices"][0]["message"]
    assert message["reasoning"].count(" w") == 2 and message["content"].count(" w") == 4
    assert plain["usage"]["completion_tokens"] == 6
    assert not any("reasoning" in d or "reasoning_content" in d for d in completion)
