"""Restart drills: ``python -m launcher.drill drill=<scenario>`` (see launcher/drill/runner.py)."""
