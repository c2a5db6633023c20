"""Joining a Ray cluster for ``--ray ADDRESS``: the one connection helper of the sweep's Ray runner
(usecases/sweep/ray.py) and the Ray client driver (load/drivers/ray.py); ``ray`` is an optional extra."""

from __future__ import annotations

from typing import Any

from speedbench.errors import UserError
from speedbench.extras import require


class ClusterUnreachable(UserError, ConnectionError):
    """``--ray ADDRESS`` names no cluster this machine can join."""


def connect(address: str, what: str) -> Any:
    """``ray.init`` for ``--ray ADDRESS``: ``local`` starts a Ray instance on this machine, ``auto`` joins the cluster
    this machine is part of, anything else is a cluster address (``HOST:PORT`` or ``ray://HOST:PORT``).  ``what``:
    the command, named in the missing-extra message."""
    require("ray", "ray", what)
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
        try:
            if address == "local":
                ray.init(include_dashboard=False, **kwargs)
            else:
                ray.init(address=address, **kwargs)
        except ConnectionError as e:
            raise ClusterUnreachable(f"--ray {address}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    return ray
