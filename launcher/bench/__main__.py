"""
``python -m launcher.bench [bench.key=value ...]``: a benchmark, not a test. Prints a table and
writes ``bench.json``, ``bench.txt`` and (with matplotlib) ``bench.png`` to ``bench.out_dir``.

    python -m launcher.bench                                  # sizes 1k, 10k, 100k (takes minutes)
    python -m launcher.bench bench.quick=true                 # smoke run, tiny sizes
    python -m launcher.bench bench.sizes=[1000,10000] bench.out_dir=docs/bench

Exit codes: 0 finished (targets missed are reported, not failed), 2 bad configuration,
3 no Redis server could be started or reached, 130 / 143 / 129 stopped by SIGINT / SIGTERM /
SIGHUP (the Redis server it started is stopped first).
"""

from __future__ import annotations

from pathlib import Path

from launcher import quiet_import  # noqa: F401 (first: Ctrl-C during the imports below)
from launcher.bench.config import CONFIG_NAME
from launcher.bench.config import BenchSettings
from launcher.bench.config import register
from launcher.bench.config import to_bench_settings
from launcher.cli import App
from launcher.cli import main


def _bench(settings: BenchSettings) -> int:
    from launcher.bench.runner import render  # noqa: PLC0415
    from launcher.bench.runner import run_bench  # noqa: PLC0415
    from launcher.bench.runner import write_outputs  # noqa: PLC0415

    result = run_bench(settings)
    print(render(result), flush=True)
    for path in write_outputs(result, Path(settings.out_dir), settings.plot):
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    main(App(CONFIG_NAME, register, to_bench_settings, _bench,
             stopped="the benchmark; the Redis server it started was stopped"))
