"""Prometheus monitoring of the launcher (metrics, cache listener, health probe, HTTP exporter)."""
