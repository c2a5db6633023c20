"""The import graph of speedbench: no cycle anywhere (every package), and the layers import only downwards.

Every ``import`` / ``from ... import`` statement anywhere in a module counts (inside functions, methods,
``try`` and ``if TYPE_CHECKING:`` blocks too); relative imports are resolved.  Edges:

- ``import a.b.c`` -> ``a.b.c``; ``from a.b import n`` -> ``a.b.n`` when ``n`` is a submodule, else ``a.b``
  (its ``__init__``: the names come from there);
- importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``: an edge to each of those packages,
  except the packages that contain the importing module itself (Python has initialised those before the
  module runs, so the import cannot trigger them; counting them would pair every re-exporting ``__init__``
  with its own submodules).  An explicit ``from <own package> import name`` of a non-module name does count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "speedbench"

Graph = dict[str, set[str]]


# --------------------------------------------------------------------------- the graph


def module_files(src: Path, root: str) -> dict[str, Path]:
    """Module name -> file for every ``.py`` under ``src/root`` (a package is named by its ``__init__.py``)."""
    out: dict[str, Path] = {}
    for path in sorted((src / root).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from X import ...`` names (relative levels resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_edges(module: str, source: str, modules: Iterable[str], packages: set[str]) -> set[str]:
    """The speedbench modules one module imports, by the rules of the module docstring."""
    known = set(modules)
    own = set(_ancestors(module))
    out: set[str] = set()

    def add(target: str, explicit: bool) -> None:
        if target not in known or target == module:
            return
        for parent in _ancestors(target):  # running a.b.c runs a/__init__ and a/b/__init__ first
            if parent in known and parent not in own and parent != module:
                out.add(parent)
        if explicit or target not in own:
            out.add(target)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, explicit=False)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, module, module in packages)
            names = [a.name for a in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
            takes_names = len(submodules) < len(names)  # some name (or *) comes from base's namespace
            add(base, explicit=takes_names)
            for sub in submodules:
                add(sub, explicit=True)
    return out


def build_graph(src: Path = SRC, root: str = ROOT) -> Graph:
    files = module_files(src, root)
    packages = {m for m, p in files.items() if p.name == "__init__.py"}
    return {m: import_edges(m, p.read_text(encoding="utf-8"), files, packages) for m, p in files.items()}


# --------------------------------------------------------------------------- cycles


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    out.append(sorted(comp))
    return out


def _path_back(graph: Graph, start: str, within: set[str]) -> list[str]:
    """A shortest cycle start -> ... -> start inside one component."""
    prev: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph.get(node, ())):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if child in within and child not in prev:
                prev[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle")


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle path per strongly connected component of more than one module (or a self-import)."""
    cycles = []
    for comp in strongly_connected(graph):
        if len(comp) > 1 or comp[0] in graph.get(comp[0], ()):
            cycles.append(_path_back(graph, comp[0], set(comp)))
    return cycles


def _show(cycles: list[list[str]]) -> str:
    return "; ".join(" -> ".join(c) for c in cycles)


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# --------------------------------------------------------------------------- the finder itself


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_finder_sees_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import g\n",
            "pkg/b.py": "def g():\n    from . import a\n    return a\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )
    graph = build_graph(tmp_path, "pkg")
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_finder_sees_cycles_through_an_init(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            # x imports only sub.y, but that runs sub/__init__, which imports x
            "pkg/x.py": "from pkg.sub.y import f\n",
            "pkg/sub/__init__.py": "from pkg.x import f\n",
            "pkg/sub/y.py": "def f():\n    return 1\n",
            # a name (not a module) taken from the own package's __init__, which imports this module
            "pkg/r/__init__.py": "from .m import VALUE\nLIMIT = 3\n",
            "pkg/r/m.py": "VALUE = 1\n\ndef limit():\n    from pkg.r import LIMIT\n    return LIMIT\n",
        },
    )
    cycles = find_cycles(build_graph(tmp_path, "pkg"))
    assert sorted(cycles) == [["pkg.r", "pkg.r.m", "pkg.r"], ["pkg.sub", "pkg.x", "pkg.sub"]]


def test_finder_does_not_count_a_module_importing_its_siblings_as_a_cycle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/r/__init__.py": "from pkg.r.m import f\n",
            "pkg/r/m.py": "from pkg.r.n import g\nfrom pkg.r import n\n\ndef f():\n    return g()\n",
            "pkg/r/n.py": "import typing\n\nif typing.TYPE_CHECKING:\n    import pkg\n\ndef g():\n    return 2\n",
        },
    )
    graph = build_graph(tmp_path, "pkg")
    assert graph["pkg.r"] == {"pkg.r.m"} and graph["pkg.r.m"] == {"pkg.r.n"} and graph["pkg.r.n"] == set()
    assert find_cycles(graph) == []


# --------------------------------------------------------------------------- speedbench


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph()


def test_the_graph_sees_function_level_and_package_imports(graph: Graph) -> None:
    # cli/data.py imports its builders inside the command functions only
    assert "speedbench.data.builders.speed_bench" in graph["speedbench.cli.data"]
    # importing speedbench.data.readers runs speedbench/data/__init__.py
    assert "speedbench.data" in graph["speedbench.usecases.run"]


def test_no_import_cycle_anywhere(graph: Graph) -> None:
    """Not one cycle in src/speedbench, whatever the package: a function-level import closes a loop as surely as a
    module-level one (it only defers it), so it counts."""
    cycles = find_cycles(graph)
    assert cycles == [], f"import cycles: {_show(cycles)}"


def test_data_embed_and_analysis_import_no_engine(graph: Graph) -> None:
    bad = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _in(m, "speedbench.data", "speedbench.embed", "speedbench.analysis")
        for t in targets
        if _in(t, "speedbench.engines")
    )
    assert bad == []


def test_engines_import_no_dataset_builder(graph: Graph) -> None:
    bad = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _in(m, "speedbench.engines")
        for t in targets
        if _in(t, "speedbench.data.builders")
    )
    assert bad == []


def test_reading_datasets_needs_no_builder(graph: Graph) -> None:
    """The run side of data/ (sample, readers and what they read) never imports data/builders/."""
    bad = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _in(m, "speedbench.data") and not _in(m, "speedbench.data.builders")
        for t in targets
        if _in(t, "speedbench.data.builders")
    )
    assert bad == []


# --------------------------------------------------------------------------- the layers (docs/architecture.md)

# What each top-level module or package of speedbench may import from speedbench (besides itself).  The same
# table is the "may import" column of docs/architecture.md; change both together.
LAYERS: dict[str, set[str]] = {
    "speedbench": set(),  # the package __init__: the version only
    "errors": set(),  # the error base (SpeedbenchError, UserError): neutral, any layer may raise them
    "records": set(),
    "config": set(),
    "paths": set(),
    "atomic": set(),
    "extras": set(),
    "prompts": set(),
    "cluster": {"extras"},  # joining a Ray cluster: the sweep's Ray runner and the Ray load driver share it
    "models": {"paths", "extras"},
    "embed": {"atomic", "extras", "paths"},
    "data": {"atomic", "embed", "extras", "models", "paths"},
    "engines": {"atomic", "config", "extras", "models", "paths", "prompts", "records"},
    # cluster: the Ray driver; metrics: --client-procs auto reads the warm-up's E2E
    "load": {"cluster", "config", "data", "engines", "metrics", "records"},
    "metrics": {"records"},
    "results": {"speedbench", "atomic", "config", "metrics", "records"},
    # data: the dataset commands' tables; extras: the figures' missing-extra line; speedbench: the version
    "report": {"speedbench", "data", "extras", "metrics", "records", "results"},
    "analysis": {"metrics", "models", "prompts", "records", "results"},
    # report: the report use case renders the HTML pages it writes (usecases/report.py); embed: the dataset use
    # cases embed prompts to select and audit them (usecases/data.py)
    "usecases": {
        "analysis",
        "atomic",
        "cluster",
        "config",
        "data",
        "embed",
        "engines",
        "extras",
        "load",
        "metrics",
        "models",
        "paths",
        "records",
        "report",
        "results",
    },
}
for _name in set(LAYERS) - {"speedbench", "errors"}:
    LAYERS[_name].add("errors")
LAYERS["cli"] = set(LAYERS)  # the command line sits on top: it may import every layer, and nothing imports it


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_module_belongs_to_a_declared_layer(graph: Graph) -> None:
    assert sorted({_layer(m) for m in graph} - set(LAYERS)) == []


def test_layers_import_only_what_the_architecture_allows(graph: Graph) -> None:
    bad = sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if _layer(a) != _layer(b) and _layer(b) not in LAYERS[_layer(a)]
    )
    assert bad == [], "imports the layers do not allow (docs/architecture.md):\n" + "\n".join(bad)


def test_the_layer_check_can_fail() -> None:
    g: Graph = {"speedbench.metrics.x": {"speedbench.engines.y"}, "speedbench.engines.y": set()}
    bad = [f"{a} -> {b}" for a, ts in g.items() for b in ts if _layer(b) not in LAYERS[_layer(a)]]
    assert bad == ["speedbench.metrics.x -> speedbench.engines.y"]
