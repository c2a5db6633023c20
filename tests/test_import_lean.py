import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "vllm", "sglang", "tensorrt_llm", "datasets", "sentence_transformers", "sklearn",
         "tiktoken", "matplotlib")


def _modules(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "; import sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_import_speedbench_pulls_no_engine_library():
    mods = _modules("import speedbench, speedbench.usecases.run, speedbench.engines.registry, speedbench.engines.mock, "
                    "speedbench.engines.openai_http, speedbench.engines.mock_server, speedbench.engines.reference, "
                    "speedbench.engines.hf_models, speedbench.engines.vllm, speedbench.engines.llamacpp, "
                    "speedbench.engines.sglang, speedbench.engines.trtllm, speedbench.usecases.check_lossless, "
                    "speedbench.analysis.lossless, speedbench.data.build.speed_bench, speedbench.data.build.resolvers, "
                    "speedbench.data.build.tokens, speedbench.data.build.throughput, speedbench.data.build.offline_text, "
                    "speedbench.data.build.synthetic, speedbench.data.build.pools, speedbench.data.build.select, speedbench.data.build.audit, "
                    "speedbench.embed, speedbench.cli.data")
    assert [m for m in mods if m.split(".")[0] in HEAVY] == []


def test_cli_module_defers_heavy_imports_until_a_command_runs():
    mods = _modules("import speedbench, speedbench.cli")
    assert "aiohttp" not in mods and "numpy" not in mods
