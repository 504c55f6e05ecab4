"""
``python -m launcher.drill drill=graceful|kill9|redis_restart|redis_outage|sentinel_failover [drill.key=value ...]``

Runs one restart drill (launcher/drill/runner.py) and exits:
    0  every node kept its promise
    2  bad configuration (one line)
    3  the drill could not run (a server or node did not start)
    4  a promise was broken: lost events (named), verify problems, a node that did not come back,
       or a planted loss (``drill.plant_loss``), which is always reported as found or missed
  130  interrupted (Ctrl-C; 143 SIGTERM, 129 SIGHUP): the servers and nodes it started were stopped
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from launcher.config.compose import CONFIG_DIR
from launcher.drill.config import CONFIG_NAME
from launcher.drill.config import compose_drill_config
from launcher.drill.config import register
from launcher.drill.config import to_drill_settings
from launcher.errors import LauncherError
from launcher.errors import exit_with
from launcher.stop_signals import run_tool


_STOPPED = "the drill; the servers and nodes it started were stopped"


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base=None)
def _job(cfg: DictConfig) -> None:
    from launcher.drill.runner import render  # noqa: PLC0415
    from launcher.drill.runner import run_drill  # noqa: PLC0415
    from launcher.drill.runner import write_report  # noqa: PLC0415

    try:
        report = run_drill(to_drill_settings(cfg))
    except LauncherError as e:
        exit_with(e)
    write_report(report)
    print(render(report), flush=True)
    sys.exit(report.exit_code)


def main() -> None:
    register()
    argv = sys.argv[1:]
    if not any(a.startswith("-") for a in argv):
        try:
            to_drill_settings(compose_drill_config(argv))
        except LauncherError as e:
            exit_with(e)
    run_tool(_job, _STOPPED)


if __name__ == "__main__":
    main()
