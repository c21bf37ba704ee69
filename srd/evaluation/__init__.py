"""Evaluation: rule packs (SLOs …), the series store, alert state, and Prometheus export."""
