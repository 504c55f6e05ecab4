"""
``python -m launcher [overrides...]``: compose the Hydra config and run the selected mode
(launcher/session.py). ``--cfg job|hydra|all`` prints the composed config with every password
redacted; bad input ends with one line and exit code 2 (launcher/cli.py).
"""

from __future__ import annotations

from launcher import quiet_import  # noqa: F401 (first: Ctrl-C during the imports below)
from launcher.cli import App
from launcher.cli import main
from launcher.config.compose import CONFIG_NAME
from launcher.config.compose import to_settings
from launcher.config.schema import LauncherConfig
from launcher.config.schema import register


def _execute(settings: LauncherConfig) -> int:
    from launcher.session import execute  # noqa: PLC0415 (keeps --help and config printing fast)

    return execute(settings)


if __name__ == "__main__":
    main(App(CONFIG_NAME, register, to_settings, _execute))
