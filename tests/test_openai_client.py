"""The shared OpenAI streaming client against hand-written wire formats, and the /metrics parser."""

import asyncio
import json

import pytest
from aiohttp import web

from speedbench.config import EngineSpec
from speedbench.engines.base import Request
from speedbench.engines.mock import MockSettings, MockSimulator, prompt_key
from speedbench.engines.mock_server import create_app
from speedbench.engines.openai import OpenAIEngine
from speedbench.engines.prometheus import parse_sd_counters
from speedbench.engines.vllm import parse_vllm_sd
from speedbench.load.generator import send


def _sse(*objs, done=True) -> bytes:
    body = b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs)
    return body + (b"data: [DONE]\n\n" if done else b"")


def _chunk(text, finish=None, **extra):
    c = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    c.update(extra)
    return {"id": "x", "object": "chat.completion.chunk", "choices": [c]}


SEEN = web.AppKey("seen", list)


async def _models(_request):
    return web.json_response({"data": [{"id": "served-model"}]})


async def _with_server(handler, fn, **spec):
    app = web.Application()
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", handler)
    seen = []
    app[SEEN] = seen
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    # -E body.FIELD=VALUE: pass-through request fields (JSON values parsed)
    spec = {"options": {"body.top_p": "0.5"}, **spec}
    eng = OpenAIEngine(EngineSpec(kind="openai", base_url=f"http://127.0.0.1:{port}/v1", **spec))
    try:
        await eng.start()
        return await fn(eng), seen
    finally:
        await eng.close()
        await runner.cleanup()


def _req(**kw):
    return Request("q1", "qa", 0, [{"role": "user", "content": "hi"}], max_tokens=8, **kw)


def _serve_bytes(body: bytes, status=200):
    async def handler(request):
        request.app[SEEN].append((dict(request.headers), await request.json()))
        if status != 200:
            return web.Response(status=status, text="overloaded")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(body)
        await resp.write_eof()
        return resp

    return handler


def test_combined_ending_without_token_ids_counts_one_token_per_chunk(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc")
    body = _sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        _chunk("Hello"),
        _chunk(" world"),
        dict(_chunk("!", "stop"), usage={"prompt_tokens": 3, "completion_tokens": 3}),
    )
    rec, seen = asyncio.run(_with_server(_serve_bytes(body), lambda e: send(e, _req(), 10)))
    assert rec.ok, rec.error
    assert rec.output_text == "Hello world!"
    assert rec.chunk_tokens == [1, 1, 1] and rec.completion_tokens == 3
    assert rec.chunk_tokens_exact  # the server's usage total confirms one token per chunk
    assert rec.completion_tokens_source == "server_usage" and rec.finish_reason == "stop"
    assert rec.output_token_ids is None
    headers, payload = seen[0]
    assert headers["Authorization"] == "Bearer sk-abc"
    assert payload["model"] == "served-model"  # taken from /v1/models
    assert payload["stream_options"] == {"include_usage": True}
    assert payload["top_p"] == 0.5 and payload["temperature"] == 0.0 and payload["max_tokens"] == 8


def test_usage_disagreeing_with_chunks_marks_counts_inexact():
    body = _sse(_chunk("Hello there"), _chunk(" friend", "length"), {"choices": [], "usage": {"completion_tokens": 5}})
    rec, _ = asyncio.run(_with_server(_serve_bytes(body), lambda e: send(e, _req(), 10)))
    assert rec.ok and rec.completion_tokens == 5 and not rec.chunk_tokens_exact


@pytest.mark.parametrize(
    "body, status, cause",
    [
        (b"", 503, "http_503"),
        (_sse(_chunk("a"))[: -len(b"data: [DONE]\n\n")], 200, "reset"),
        (b"data: {broken\n\n", 200, "malformed_stream"),
        (_sse({"error": {"message": "boom"}}), 200, "server_error"),
    ],
)
def test_failures_become_records_with_causes(body, status, cause):
    rec, _ = asyncio.run(_with_server(_serve_bytes(body, status), lambda e: send(e, _req(), 10)))
    assert not rec.ok and rec.error["cause"] == cause


def test_parse_vllm_per_request_stats_list_and_dict_histograms():
    m = {
        "num_spec_steps": 4,
        "num_draft_tokens": 12,
        "num_accepted_draft_tokens": 5,
        "acceptance_histogram": [1, 1, 1, 1],
    }
    s = parse_vllm_sd(m, 3)
    assert (s.steps, s.drafted, s.accepted) == (4, 12, 5)
    assert s.per_position == [3, 2, 1] and s.source == "per_request"
    s2 = parse_vllm_sd({**m, "acceptance_histogram": {"0": 1, "3": 1, "1": 1, "2": 1}}, 3)
    assert s2.histogram == [1, 1, 1, 1]
    assert parse_vllm_sd({"num_spec_steps": 1}, 3) is None


VLLM_METRICS = """# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 10.0
vllm:spec_decode_num_drafts_total{engine="1",model_name="m"} 5.0
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 45.0
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 20.0
vllm:spec_decode_num_accepted_tokens_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 11.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="1"} 6.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="2"} 3.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 2.0
"""


def test_prometheus_parser_sums_label_sets_and_skips_created():
    snap = parse_sd_counters(VLLM_METRICS)
    assert snap == {
        "num_drafts": 15.0,
        "num_draft_tokens": 45.0,
        "num_accepted_tokens": 20.0,
        "per_position": {"0": 11.0, "1": 6.0, "2": 3.0},
    }
    assert parse_sd_counters("vllm:num_requests_running 1\n") is None  # SD off: counters absent
    assert parse_sd_counters(VLLM_METRICS, prefix="llamacpp:spec_decode_") is None


def test_mock_server_metrics_page_round_trips_through_the_parser():
    sim_settings = MockSettings(ttft_ms=0, step_ms=0)

    async def go():
        app = create_app(sim_settings)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        eng = OpenAIEngine(EngineSpec(kind="openai", base_url=f"http://127.0.0.1:{port}/v1", model="mock"))
        await eng.start()
        try:
            before = await eng.counters()
            rec = await send(eng, _req(), 10)
            after = await eng.counters()
        finally:
            await eng.close()
            await runner.cleanup()
        return before, rec, after

    before, rec, after = asyncio.run(go())
    assert before["num_drafts"] == 0
    assert after["num_drafts"] == rec.sd.steps and after["num_accepted_tokens"] == rec.sd.accepted
    assert [after["per_position"][str(i)] for i in range(3)] == rec.sd.per_position
    # the same seeded simulation reproduces what the server did for this prompt
    plan = MockSimulator(sim_settings).plan(prompt_key(_req().messages), 8)
    assert plan.sd == rec.sd


def test_metrics_page_that_is_not_prometheus_text_gives_no_counters_and_a_reason():
    async def html(_request):
        return web.Response(text="<html><body>{not metrics}</body></html>", content_type="text/html")

    async def go():
        app = web.Application()
        app.router.add_get("/v1/models", _models)
        app.router.add_get("/metrics", html)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        eng = OpenAIEngine(EngineSpec(kind="openai", base_url=f"http://127.0.0.1:{port}/v1"))
        await eng.start()
        try:
            return await eng.counters(), eng.counter_error
        finally:
            await eng.close()
            await runner.cleanup()

    snap, why = asyncio.run(go())
    assert snap is None and "/metrics" in why


def test_body_fields_pass_through_and_the_seed_is_sent_only_when_asked():
    body = _sse(_chunk("a"), _chunk("b", "stop"), {"choices": [], "usage": {"completion_tokens": 2}})
    opts = {
        "body.stop": '["\\n\\n"]',
        "body.top_k": "5",
        "body.chat_template_kwargs": '{"enable_thinking": false}',
        "body.label": "plain text",
    }
    _, seen = asyncio.run(_with_server(_serve_bytes(body), lambda e: send(e, _req(seed=1234), 10), options=opts))
    payload = seen[0][1]
    assert payload["stop"] == ["\n\n"] and payload["top_k"] == 5 and payload["label"] == "plain text"
    assert payload["chat_template_kwargs"] == {"enable_thinking": False}
    assert "seed" not in payload  # sent only with --request-seed
    _, seen = asyncio.run(
        _with_server(_serve_bytes(body), lambda e: send(e, _req(seed=1234, extra_body={"n": 1}), 10), request_seed=True)
    )
    assert seen[0][1]["seed"] == 1234 and seen[0][1]["top_p"] == 0.5 and seen[0][1]["n"] == 1


@pytest.mark.parametrize(
    "options, match",
    [
        (
            {"tempreature": "0.5"},
            "-E tempreature=0.5: unknown option for engine 'openai' (accepted: api_token, "
            "chunks_are_steps, enable_thinking, body.FIELD)",
        ),
        ({"top_p": "0.9"}, "-E top_p=0.9: unknown option for engine 'openai'"),  # request fields need body.
        ({"chunks_are_steps": "sometimes"}, "-E chunks_are_steps=sometimes: Input should be a valid boolean"),
    ],
)
def test_unknown_or_mistyped_options_are_refused_in_one_line(options, match):
    with pytest.raises(ValueError) as ei:
        OpenAIEngine(EngineSpec(kind="openai", base_url="http://127.0.0.1:1/v1", options=options))
    assert str(ei.value).startswith(match) and "\n" not in str(ei.value)


def test_sd_is_a_label_of_known_methods_and_an_unknown_one_is_refused():
    eng = OpenAIEngine(EngineSpec(kind="openai", base_url="http://127.0.0.1:1/v1", sd="eagle3", draft_length=4))
    assert eng.describe()["sd"] == "eagle3" and eng.describe()["k"] == 4
    assert OpenAIEngine(EngineSpec(kind="openai", base_url="http://x/v1", sd="none")).describe()["k"] == 0
    with pytest.raises(ValueError, match="--sd 'turbo' is not supported by engine 'openai'"):
        OpenAIEngine(EngineSpec(kind="openai", base_url="http://127.0.0.1:1/v1", sd="turbo"))


def test_api_token_option_is_the_bearer_key_and_is_redacted():
    from speedbench.config import redact

    eng = OpenAIEngine(EngineSpec(kind="openai", base_url="http://x/v1", options={"api_token": "sk-secret"}))
    assert eng.api_key == "sk-secret"
    assert redact(eng.describe())["options"]["api_token"] == "***"


def test_root_url_strips_one_v1():
    from speedbench.engines.openai_http import root_url

    assert root_url("http://h:1/v1") == "http://h:1" and root_url("http://h:1/v1/") == "http://h:1"
    assert root_url("http://h:1") == "http://h:1" and root_url("http://h/api/v1") == "http://h/api"
