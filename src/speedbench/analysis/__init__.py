"""Analyses over finished runs, never an engine: losslessness (lossless.py), paired comparisons and their bootstrap
intervals (pairing.py, stats.py), a sweep's tables (sweep_report.py, synthetic_vs_real.py), the speedup model and
its SLO answer (speedup_model.py, slo.py, model_summary.py: model.json's data) and draft-vocabulary coverage
(vocab.py).  They build the typed figures of results/ that report/ draws."""
