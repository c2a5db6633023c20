"""Use cases: what a command does end to end, one module per command: run.py (``run``: one run), check_lossless.py,
sweep/ (plan, runner, Ray, adaptive), report.py (``report`` and ``model``: what a directory is, the tables' and
pages' data), analyze.py (``analyze vocab``), data.py (``data select / audit / synthetic``).

They sit above every layer (data, engines, load, metrics, results, analysis) and below the CLI, which only
parses flags and prints; tests and Python callers use them directly."""
