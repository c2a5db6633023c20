"""Analyses over finished runs (losslessness, comparisons)."""
