"""An HTML page as files: the page itself (``report --html FILE``, a sweep's report.html, a model's model.html)
and, with ``--figures DIR``, each of its figures as SVG and PNG.  The text and the figure files' contents come
from ``report/html.py``; this module only writes them (each atomically, folders made as needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from speedbench.atomic import atomic_path, atomic_write


def write_page(path: Path, text: str, figures_dir: Path | None, figures: Mapping[str, bytes]) -> list[Path]:
    """The figure files (name -> contents) into ``figures_dir``, then the page at ``path``; returns the figure
    files' paths."""
    saved = []
    if figures_dir is not None:
        for name, data in figures.items():
            with atomic_path(figures_dir / name) as tmp:
                tmp.write_bytes(data)
            saved.append(figures_dir / name)
    atomic_write(path, text)
    return saved
