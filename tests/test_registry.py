import dataclasses

import pytest

from speedbench.config import EngineSpec
from speedbench.engines import registry
from speedbench.engines.base import Engine
from speedbench.engines.mock import MockEngine


def test_resolve_known_and_protocol():
    cls = registry.resolve("mock")
    assert cls is MockEngine
    assert isinstance(MockEngine(EngineSpec(kind="mock")), Engine)


def test_unknown_engine_suggests_a_name():
    with pytest.raises(registry.EngineNotFound, match="unknown engine 'opnai'; did you mean 'openai'"):
        registry.resolve("opnai")


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(
        registry.BUILTIN,
        "fancy",
        registry.EngineEntry(
            "speedbench_not_installed_mod:Engine",
            "needs an extra",
            extra="fancy",
            requires=("speedbench_not_installed_mod",),
        ),
    )
    with pytest.raises(registry.EngineUnavailable) as ei:
        registry.resolve("fancy")
    assert "pip install 'speedbench[fancy]'" in str(ei.value)
    assert registry.is_installed(registry.BUILTIN["fancy"]) is False
    assert registry.describe_capabilities("fancy") == "-"


def test_capabilities_listing():
    assert "per-request SD stats" in registry.describe_capabilities("mock")
    assert "in-process" not in registry.describe_capabilities("openai")


@pytest.mark.parametrize("name", sorted(registry.BUILTIN))
def test_each_class_declares_the_capabilities_of_its_registry_entry(name):
    """The registry entry is the one declaration; the class refers to it (checked here without a server)."""
    cls = registry.resolve(name)
    assert cls.capabilities is registry.declared(name)
    assert cls.name == name


def test_static_facts_come_from_the_registry_without_importing_engines():
    assert registry.launchable() == ["vllm", "llamacpp", "sglang", "trtllm"]
    assert registry.capabilities("reference").default_output_len == 32
    assert registry.capabilities("mock").default_output_len == 256
    assert registry.capabilities("reference").in_process and not registry.capabilities("vllm").in_process
    assert "reference: none, ngram, draft (default ngram)" in registry.sd_methods_help()
    rows = {r["name"]: r for r in registry.listing()}
    assert rows["llamacpp"]["sd"] == "none|ngram|draft" and "--launch" in rows["llamacpp"]["capabilities"]


def test_an_option_that_changes_a_capability_is_computed_per_instance():
    from speedbench.engines.openai import OpenAIEngine

    plain = MockEngine(EngineSpec(kind="mock"))
    quiet = MockEngine(EngineSpec(kind="mock", options={"per_request_stats": "false"}))
    assert plain.capabilities.per_request_sd_stats and not quiet.capabilities.per_request_sd_stats
    assert MockEngine.capabilities.per_request_sd_stats  # the declared value is untouched
    eng = OpenAIEngine(EngineSpec(kind="openai", base_url="http://x/v1", options={"chunks_are_steps": "false"}))
    assert eng.capabilities == dataclasses.replace(registry.declared("openai"), chunks_are_steps=False)
