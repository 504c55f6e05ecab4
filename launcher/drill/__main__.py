"""
``python -m launcher.drill drill=graceful|kill9|redis_restart|redis_outage|outage_kill9|sentinel_failover|chaos|
cluster_failover|cluster_reshard [drill.key=value ...]``

Runs one restart drill (launcher/drill/runner.py) and exits:
    0  every node kept its promise
    2  bad configuration (one line)
    3  the drill could not run (a server or node did not start)
    4  a promise was broken: lost events (named), verify problems, a node that did not come back,
       or a planted loss (``drill.plant_loss``), which is always reported as found or missed
  130  interrupted (Ctrl-C; 143 SIGTERM, 129 SIGHUP): the servers and nodes it started were stopped
"""

from __future__ import annotations

from launcher import quiet_import  # noqa: F401 (first: Ctrl-C during the imports below)
from launcher.cli import App
from launcher.cli import main
from launcher.drill.config import CONFIG_NAME
from launcher.drill.config import DrillSettings
from launcher.drill.config import register
from launcher.drill.config import to_drill_settings


def _drill(settings: DrillSettings) -> int:
    from launcher.drill.runner import render  # noqa: PLC0415
    from launcher.drill.runner import run_drill  # noqa: PLC0415
    from launcher.drill.runner import write_report  # noqa: PLC0415

    report = run_drill(settings)
    write_report(report)
    print(render(report), flush=True)
    return report.exit_code


if __name__ == "__main__":
    main(App(CONFIG_NAME, register, to_drill_settings, _drill,
             stopped="the drill; the servers and nodes it started were stopped"))
