"""Benchmarks: ``python -m launcher.bench`` (native and resilient side by side; see launcher/bench/runner.py)."""
