"""
``python -m launcher [overrides...]``: compose the Hydra config and run the selected mode.

The command line is composed and validated once before Hydra runs the job, so bad input
ends with one line and exit code 2 instead of Hydra's multi-line error and exit code 1.
``--cfg job|hydra|all`` prints the composed config with every password redacted.
"""

from __future__ import annotations

import signal
import sys

import hydra
from omegaconf import DictConfig

from launcher.config.compose import CONFIG_DIR
from launcher.config.compose import CONFIG_NAME
from launcher.config.compose import compose_config
from launcher.config.compose import redacted_yaml
from launcher.config.compose import to_settings
from launcher.config.schema import register
from launcher.config.validate import validate
from launcher.errors import Interrupted
from launcher.errors import LauncherError
from launcher.errors import exit_with


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base=None)
def _job(cfg: DictConfig) -> None:
    from launcher.app import execute  # noqa: PLC0415 (keeps --help and config printing fast)

    try:
        code = execute(to_settings(cfg))
    except (LauncherError, Interrupted) as e:
        exit_with(e)
    sys.exit(code)


def _print_config(argv: list[str]) -> None:
    """Hydra's --cfg/-c, --resolve and --package/-p, with secrets redacted."""
    which, resolve, package, overrides = "job", False, None, []
    args = iter(argv)
    for arg in args:
        if arg in ("--cfg", "-c"):
            which = next(args, "job")
        elif arg.startswith("--cfg="):
            which = arg.split("=", 1)[1]
        elif arg == "--resolve":
            resolve = True
        elif arg in ("--package", "-p"):
            package = next(args, None)
        elif not arg.startswith("-"):
            overrides.append(arg)
    cfg = compose_config(overrides, with_hydra=which in ("hydra", "all"))
    if which == "job":
        print(redacted_yaml(cfg, resolve=resolve, package=package), end="")
        return
    if which == "hydra":
        print(redacted_yaml(cfg, resolve=False, package="hydra"), end="")
        return
    print(redacted_yaml(cfg, resolve=False, package=package), end="")


_OUR_FLAGS = {"--cfg", "-c", "--resolve", "--package", "-p"}


def main() -> None:
    register()
    argv = sys.argv[1:]
    flags = [a for a in argv if a.startswith("-")]
    try:
        if any(f in ("--cfg", "-c") or f.startswith("--cfg=") for f in flags):
            _print_config(argv)
            sys.exit(0)
        if not flags:
            # Validate before Hydra runs the job: one line and exit 2 for any bad input.
            validate(to_settings(compose_config(argv)))
        _job()
    except LauncherError as e:
        exit_with(e)
    except KeyboardInterrupt:  # Ctrl-C while the config is composed, before the launcher's own handling
        exit_with(Interrupted(signal.SIGINT))


if __name__ == "__main__":
    main()
