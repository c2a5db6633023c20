"""Metrics: small pure functions over records (see docs/metrics.md for definitions)."""
