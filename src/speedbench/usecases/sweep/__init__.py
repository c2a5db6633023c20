"""``speedbench sweep``: a grid of ordinary runs (docs/sweep.md): ``plan`` (configuration, grid, launch groups),
``runner`` (running it group by group, resume), ``ray`` (``--ray ADDRESS``: each launch group a Ray task) and
``adaptive`` (``--adaptive --slo``: rounds of sweeps chosen by the fitted model)."""
