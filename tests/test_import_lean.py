import json
import subprocess
import sys

HEAVY = (
    "torch",
    "transformers",
    "vllm",
    "sglang",
    "tensorrt_llm",
    "datasets",
    "sentence_transformers",
    "sklearn",
    "tiktoken",
    "matplotlib",
)


def _modules(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "; import sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def test_import_speedbench_pulls_no_engine_library():
    mods = _modules(
        "import speedbench, speedbench.usecases.run, speedbench.engines.registry, speedbench.engines.mock, "
        "speedbench.engines.openai_http, speedbench.engines.mock_server, speedbench.engines.reference, "
        "speedbench.engines.hf_models, speedbench.engines.openai, speedbench.engines.vllm, "
        "speedbench.engines.llamacpp, speedbench.engines.sglang, speedbench.engines.trtllm, "
        "speedbench.usecases.check_lossless, "
        "speedbench.analysis.lossless, speedbench.models, speedbench.prompts, speedbench.extras, "
        "speedbench.data.readers, speedbench.data.builders.speed_bench, "
        "speedbench.data.builders.resolvers, speedbench.data.builders.tokens, "
        "speedbench.data.builders.exact_length, speedbench.data.builders.throughput, "
        "speedbench.data.builders.offline_text, speedbench.data.builders.synthetic, "
        "speedbench.data.builders.pools, speedbench.data.builders.select, speedbench.data.builders.audit, "
        "speedbench.embed, speedbench.cli.data"
    )
    assert [m for m in mods if m.split(".")[0] in HEAVY] == []


def test_cli_module_defers_heavy_imports_until_a_command_runs():
    mods = _modules("import speedbench, speedbench.cli")
    assert "aiohttp" not in mods and "numpy" not in mods
