"""One error base (speedbench/errors.py): every exception class derives from SpeedbenchError; a UserError escaping
a command is one line and exit 2; anything else is a bug, shown with its traceback as an internal error (exit 1)."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from speedbench.cli import app
from speedbench.cli.common import ERROR_LOG, Commands, log_errors_to
from speedbench.data.sample import DatasetError
from speedbench.errors import InvalidInput, SpeedbenchError, UserError

SRC = Path(__file__).resolve().parents[1] / "src" / "speedbench"
runner = CliRunner()


def _base_names(node: ast.ClassDef) -> list[str]:
    """The last name of each base (``Exception``, ``plan_uc.SweepConfigError`` -> ``SweepConfigError``)."""
    return [b.id if isinstance(b, ast.Name) else b.attr for b in node.bases if isinstance(b, (ast.Name, ast.Attribute))]


def exception_classes() -> dict[str, list[str]]:
    """Every class in src/speedbench (at any depth) that is an exception, ``module:Name`` -> its base names; a base
    is an exception when it is a built-in one, an exception class of speedbench, or named ``*Error``/``*Exception``."""
    classes: dict[str, tuple[str, list[str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes[f"{module}:{node.name}"] = (node.name, _base_names(node))
    builtin = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    exceptions = set(builtin)
    grew = True
    while grew:  # the names of speedbench's exception classes, to a fixed point
        grew = False
        for name, bases in classes.values():
            if name not in exceptions and any(b in exceptions or b.endswith(("Error", "Exception")) for b in bases):
                exceptions.add(name)
                grew = True
    return {key: bases for key, (name, bases) in classes.items() if name in exceptions}


def test_every_exception_class_derives_from_speedbench_error() -> None:
    found = exception_classes()
    by_name = {key.split(":")[1]: bases for key, bases in found.items()}

    def reaches_base(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "SpeedbenchError":
            return True
        return name in by_name and name not in seen and any(reaches_base(b, seen | {name}) for b in by_name[name])

    assert len(found) >= 18  # the walk sees them (DatasetError, MissingExtra, RequestError, ...)
    assert "speedbench.data.sample:DatasetError" in found and "speedbench.errors:UserError" in found
    bad = sorted(key for key in found if not reaches_base(key.split(":")[1]))
    assert bad == [], f"exception classes outside speedbench.errors.SpeedbenchError: {bad}"


def test_user_errors_keep_the_builtin_bases_callers_catch() -> None:
    from speedbench.engines.registry import EngineNotFound, EngineUnavailable
    from speedbench.extras import MissingExtra
    from speedbench.records import RequestError

    assert issubclass(InvalidInput, UserError) and issubclass(InvalidInput, ValueError)
    assert issubclass(DatasetError, UserError) and issubclass(DatasetError, ValueError)
    assert issubclass(MissingExtra, UserError) and issubclass(MissingExtra, ImportError)
    assert issubclass(EngineNotFound, LookupError) and issubclass(EngineUnavailable, ImportError)
    e = MissingExtra("x needs ray: pip install 'speedbench[ray]'", module="ray", extra="ray")
    assert e.name == "ray" and e.extra == "ray" and str(e) == "x needs ray: pip install 'speedbench[ray]'"
    assert issubclass(RequestError, SpeedbenchError) and not issubclass(RequestError, UserError)  # a record's cause


def test_a_validation_error_of_user_input_is_one_line() -> None:
    from pydantic import BaseModel, Field, ValidationError

    class M(BaseModel):
        n: int = Field(ge=1)

    with pytest.raises(ValidationError) as ei:
        M(n=0)
    assert str(InvalidInput.of(ei.value)) == "n: Input should be greater than or equal to 1"


def _sweep_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sweep"
    d.mkdir()
    (d / "sweep.json").write_text("{}")
    return d


def test_a_bug_in_a_command_is_an_internal_error_with_its_traceback(monkeypatch, tmp_path) -> None:
    import speedbench.analysis.model_summary as sm

    def buggy(*args: object, **kwargs: object) -> None:
        raise KeyError("cells")

    monkeypatch.setattr(sm, "model_summary", buggy)
    res = runner.invoke(app, ["model", str(_sweep_dir(tmp_path))])
    assert res.exit_code == 1, res.output
    assert "Traceback (most recent call last)" in res.output and "in buggy" in res.output
    assert res.output.rstrip().splitlines()[-1] == "internal error, please report: KeyError: 'cells'"
    assert not any(line.startswith("error: ") for line in res.output.splitlines())


def test_a_plain_value_error_is_a_bug_not_a_user_error(monkeypatch, tmp_path) -> None:
    """Before the error base, any ValueError reached the user as ``error: ...`` and exit 2."""
    import speedbench.usecases.report as loader  # where the report use case looks load_run up

    def buggy(path: str) -> None:
        raise ValueError("min() arg is an empty sequence")

    monkeypatch.setattr(loader, "load_run", buggy)
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "Traceback" in res.output, res.output
    assert "internal error, please report: ValueError: min() arg is an empty sequence" in res.output
    assert not res.output.startswith("error: ")


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, tmp_path) -> None:
    import speedbench.usecases.report as loader  # where the report use case looks load_run up

    def bad_input(path: str) -> None:
        raise DatasetError("prompts.jsonl", 3, "turns", "must be a non-empty list of strings\nsecond line")

    monkeypatch.setattr(loader, "load_run", bad_input)
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output == "error: prompts.jsonl:3: field turns: must be a non-empty list of strings\n"


def test_a_user_error_outside_a_commands_own_handling_is_one_line_too(monkeypatch) -> None:
    from speedbench.engines import registry

    def unreadable() -> None:
        raise InvalidInput("engine entry point 'x': not a module:Class")

    monkeypatch.setattr(registry, "listing", unreadable)
    res = runner.invoke(app, ["engines"])
    assert res.exit_code == 2 and res.output == "error: engine entry point 'x': not a module:Class\n"


def test_click_exits_and_usage_errors_pass_through() -> None:
    assert runner.invoke(app, ["report", "--help"]).exit_code == 0
    res = runner.invoke(app, ["report", "--no-such-flag"])
    assert res.exit_code == 2 and "No such option" in res.output and "internal error" not in res.output


def _app_writing_into(folder: Path) -> typer.Typer:
    demo = typer.Typer(cls=Commands, add_completion=False, pretty_exceptions_enable=False)

    @demo.command()
    def crash(early: bool = False) -> None:
        if not early:
            log_errors_to(folder)
        raise RuntimeError("lost the records of http://user:pw@host:8000/v1")

    @demo.command()
    def other() -> None:
        pass

    return demo


def test_an_internal_error_goes_into_the_run_directorys_log(tmp_path: Path) -> None:
    demo = _app_writing_into(tmp_path)
    res = runner.invoke(demo, ["crash"])
    log = tmp_path / ERROR_LOG
    assert res.exit_code == 1 and log.is_file()
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "RuntimeError: lost the records" in text
    assert "user:pw" not in text and "http://***@host:8000/v1" in text  # URL credentials never written
    assert res.output.rstrip().endswith(f"(traceback saved in {log})")
    log.unlink()
    res = runner.invoke(demo, ["crash", "--early"])  # the folder of an earlier command is not this one's
    assert res.exit_code == 1 and not log.exists() and "traceback saved" not in res.output
