"""Use cases: what a command does end to end (one run, check-lossless, the sweep in sweep/).

They sit above every layer (data, engines, load, metrics, results, analysis) and below the CLI, which only
parses flags and prints; tests and Python callers use them directly."""
