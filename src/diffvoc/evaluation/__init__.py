"""Evaluation: metrics, copy-synthesis, generative metrics, schedule search, report pages, demo."""
