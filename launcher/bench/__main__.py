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

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from launcher.bench.config import CONFIG_NAME
from launcher.bench.config import compose_bench_config
from launcher.bench.config import register
from launcher.bench.config import to_bench_settings
from launcher.config.compose import CONFIG_DIR
from launcher.errors import LauncherError
from launcher.errors import exit_with
from launcher.stop_signals import run_tool


_STOPPED = "the benchmark; the Redis server it started was stopped"


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base=None)
def _job(cfg: DictConfig) -> None:
    from launcher.bench.runner import render  # noqa: PLC0415
    from launcher.bench.runner import run_bench  # noqa: PLC0415
    from launcher.bench.runner import write_outputs  # noqa: PLC0415

    try:
        settings = to_bench_settings(cfg)
        result = run_bench(settings)
    except LauncherError as e:
        exit_with(e)
    print(render(result), flush=True)
    for path in write_outputs(result, Path(settings.out_dir), settings.plot):
        print(f"wrote {path}", flush=True)
    sys.exit(0)


def main() -> None:
    register()
    argv = sys.argv[1:]
    if not any(a.startswith("-") for a in argv):
        try:
            to_bench_settings(compose_bench_config(argv))
        except LauncherError as e:
            exit_with(e)
    run_tool(_job, _STOPPED)


if __name__ == "__main__":
    main()
