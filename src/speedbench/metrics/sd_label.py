"""Is the run labelled with what the server ran?  ``--sd`` (and ``-k``) only label an attached server; its SD
counters say whether it drafted during the measured window, and with per-position counters (vLLM's
``num_accepted_tokens_per_pos{position}``, one label per draft position) with how many draft positions.

A run labelled ``sd=none`` (or k 0) whose window shows drafting, or one labelled with a method whose window shows
none, or a k that is not the server's, is flagged in summary.json (``sd_check``) and in one loud console line; the
figures then use the server's k (``results.manifest.Manifest.basis``).
"""

from __future__ import annotations

from speedbench.metrics.models import SDCheck
from speedbench.records import SDStats


def server_k(delta: SDStats | None) -> int | None:
    """The server's draft length from its per-position counters (None: it exports none, or did not draft)."""
    if delta is None or delta.steps <= 0 or not delta.per_position:
        return None
    return len(delta.per_position)


def sd_check(sd: str | None, k: int, delta: SDStats | None, successful: int) -> SDCheck:
    """The label (``sd``, ``k``) checked against the counter delta of the measured window(s)."""
    label = f"sd={sd or 'unset'} k={k}"
    if delta is None:
        return SDCheck(sd=sd, k=k, ok=None, detail=f"{label}: no SD counters to check the label against")
    drafted = delta.steps > 0 or delta.drafted > 0
    sk = server_k(delta)
    seen = f"{delta.steps} drafts, {delta.drafted} draft tokens, {delta.accepted} accepted"
    base = {"sd": sd, "k": k, "server_drafted": drafted, "server_k": sk}
    labelled_off = sd == "none" or k == 0  # no --sd at all (None) with k > 0: the engine's own default, drafting
    if drafted and labelled_off:
        fix = f"--sd METHOD -k {sk}" if sk else "--sd METHOD -k K"
        return SDCheck(
            **base,
            ok=False,
            detail=f"the server drafted during the window ({seen}"
            + (f"; k {sk} from its per-position counters" if sk else "")
            + f") but the run is labelled {label}: label it with {fix}"
            + (f"; the figures use the server's k {sk}" if sk else ""),
        )
    if not drafted and not labelled_off and successful > 0:
        return SDCheck(
            **base,
            ok=False,
            detail=f"the run is labelled {label} but the server's counters show no drafting during the window: "
            "the server runs without SD (label it --sd none), or its counters are not this server's",
        )
    if drafted and sk is not None and sk != k:
        return SDCheck(
            **base,
            ok=False,
            detail=f"the run is labelled k={k} but the server's per-position counters have {sk} draft positions "
            f"({seen}): pass -k {sk}",
        )
    return SDCheck(**base, ok=True, detail=f"{label} agrees with the server's counters ({seen})")
