import pytest

from speedbench.engines import registry
from speedbench.engines.base import Engine
from speedbench.engines.mock import MockEngine


def test_resolve_known_and_protocol():
    cls = registry.resolve("mock")
    assert cls is MockEngine
    assert isinstance(MockEngine({}), Engine)


def test_unknown_engine_suggests_a_name():
    with pytest.raises(registry.EngineNotFound, match="unknown engine 'opnai'; did you mean 'openai'"):
        registry.resolve("opnai")


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(registry.BUILTIN, "fancy", registry.EngineEntry(
        "speedbench_not_installed_mod:Engine", "needs an extra", extra="fancy", requires=("speedbench_not_installed_mod",)))
    with pytest.raises(registry.EngineUnavailable) as ei:
        registry.resolve("fancy")
    assert "pip install 'speedbench[fancy]'" in str(ei.value)
    assert registry.is_installed(registry.BUILTIN["fancy"]) is False
    assert registry.describe_capabilities("fancy") == "-"


def test_capabilities_listing():
    assert "per-request SD stats" in registry.describe_capabilities("mock")
    assert "in-process" not in registry.describe_capabilities("openai")
