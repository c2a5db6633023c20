"""Optional dependencies: one line naming the extra to install when a command needs a module that is missing.

``require("matplotlib", "report", "data audit --plot")`` raises :class:`MissingExtra` with
``data audit --plot needs matplotlib: pip install 'speedbench[report]'`` when matplotlib is not installed;
the CLI prints it as ``error: ...`` (exit 2) instead of a traceback.  The module is looked up without
importing it.  Which extra holds what: pyproject.toml ``[project.optional-dependencies]``.
"""

from __future__ import annotations

import importlib.util

from speedbench.errors import UserError

__all__ = ["MissingExtra", "install_hint", "installed", "require"]


class MissingExtra(UserError, ImportError):
    """An optional module is not installed; the message is one line naming the ``pip install`` to run."""

    def __init__(self, message: str, *, module: str | None = None, extra: str | None = None) -> None:
        super().__init__(message, name=module)
        self.module, self.extra = module, extra


def install_hint(extra: str, package: str | None = None) -> str:
    """``pip install 'speedbench[EXTRA]'`` (and the package alone, when it has a name of its own)."""
    return f"pip install 'speedbench[{extra}]'" + (f" (or pip install {package})" if package else "")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (its top-level package is looked up, nothing is imported)."""
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def require(
    module: str, extra: str, what: str, *, package: str | None = None, error: type[MissingExtra] = MissingExtra
) -> None:
    """Raise ``error`` (one line: ``WHAT needs MODULE: pip install 'speedbench[EXTRA]'``) unless ``module`` is
    installed.  ``package``: the pip name when it differs from the module's, named in the message instead."""
    if not installed(module):
        raise error(f"{what} needs {package or module}: {install_hint(extra, package)}", module=module, extra=extra)
