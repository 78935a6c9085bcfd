"""Evaluation helpers: baselines, probes, task metrics."""
