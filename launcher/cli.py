"""
The one command-line runner of ``python -m launcher``, ``launcher.drill`` and ``launcher.bench``.

It composes the Hydra config once, turns it into typed (validated) settings once and maps every
failure once: a LauncherError ends with its one line and exit code, a stop signal with 128 + the
signal, anything unexpected with one line and exit code 1. No path prints a secret given on the
command line or in the environment: ``--cfg`` is printed redacted, ``--help``/``--info`` see the
overrides with secrets masked, and every error line is redacted.

Hydra's multirun is refused (each trader is its own process with its own lease), as are the
options that would load another config than the entry point's own.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import NoReturn

import hydra
from hydra.core.utils import configure_log
from omegaconf import DictConfig

from launcher.config.compose import CONFIG_DIR
from launcher.config.compose import compose_config
from launcher.config.compose import redact
from launcher.config.compose import redact_text
from launcher.config.compose import redacted_yaml
from launcher.config.compose import secret_values
from launcher.errors import ConfigError
from launcher.errors import Interrupted
from launcher.errors import LauncherError
from launcher.stop_signals import run_tool


# Hydra prints these itself without running the job; they see the overrides with secrets masked.
_HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--info", "-i", "--shell-completion", "-sc"}
_CFG_FLAGS = {"--cfg", "-c"}
_MULTIRUN_FLAGS = {"--multirun", "-m"}
_COMPLETION_SUBCOMMANDS = ("install", "uninstall", "query")


@dataclass(frozen=True)
class App:
    """
    One entry point: its primary config (``conf/{config_name}.yaml``) and the registration of its
    schema with Hydra's ConfigStore, the conversion of the composed config to its typed settings
    (raising ConfigError), and the job that runs them and returns the exit code. A `stopped` tool (drill, bench) is unwound by SIGINT/SIGTERM/SIGHUP
    with a line naming what was stopped; without it the job handles stop signals itself.
    """

    config_name: str
    register: Callable[[], None]
    settings: Callable[[DictConfig], Any]
    job: Callable[[Any], int]
    stopped: str | None = None


def main(app: App, argv: list[str] | None = None) -> NoReturn:
    """Run `app` with `argv` (default: the process's arguments) and end the process."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_DFL:  # set by launcher.quiet_import for the imports
        signal.signal(signal.SIGINT, signal.default_int_handler)
    argv = list(sys.argv[1:] if argv is None else argv)
    secrets = secret_values(argv)
    _redact_log_records(secrets)
    try:
        app.register()
        code = _dispatch(app, argv)
    except BaseException as error:  # noqa: BLE001 (the one place every failure is mapped to an exit)
        _exit_for(error, app, secrets)
    sys.exit(code)


_LOG_SECRETS: set[str] = set()  # what `_redact_log_records` replaces (the latest main's secrets)


def _redact_log_records(secrets: set[str]) -> None:
    """
    Every Python log record's message with `secrets` replaced, whatever handler prints it: a
    secret inside an exception text nobody foresaw must not reach a log line either. (The
    final error line is redacted apart, in `_exit_for`; NautilusTrader's own logger is not
    Python's, and is handed no secrets.)
    """
    _LOG_SECRETS.clear()
    _LOG_SECRETS.update(secrets)
    make = logging.getLogRecordFactory()
    if not secrets or getattr(make, "redacts", False):  # installed once per process, whatever calls main
        return

    def redacted(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if not _LOG_SECRETS:
            return record
        message = record.getMessage()
        clean = redact_text(message, _LOG_SECRETS)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[0] is not None:  # formatters print exc_text when it is set
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info), _LOG_SECRETS)
        return record

    redacted.redacts = True
    logging.setLogRecordFactory(redacted)


def _dispatch(app: App, argv: list[str]) -> int:
    flags = {arg.split("=", 1)[0] for arg in argv if arg.startswith("-")}
    if flags & _MULTIRUN_FLAGS:
        raise ConfigError("", "multirun (-m/--multirun) is not supported: each trader is its own process "
                              "with its own lease; start one process per run")
    if flags & _CFG_FLAGS:
        print(_config_text(app, argv), end="")
        return 0
    if flags & {"--shell-completion", "-sc"} and not any(
        arg.split("=", 1)[0] in _COMPLETION_SUBCOMMANDS for arg in argv
    ):
        raise ConfigError("", f"Expecting one subcommand from {list(_COMPLETION_SUBCOMMANDS)} to be set")
    if flags & _HYDRA_FLAGS:
        return _hydra_prints(app, [redact(arg) for arg in argv])
    if flags:
        raise ConfigError("", f"unsupported option {sorted(flags)[0]} (--resolve and --package go with --cfg; "
                              "see --help and --hydra-help)")
    cfg = compose_config(argv, with_hydra=True, config_name=app.config_name)
    settings = app.settings(cfg)
    try:
        configure_log(cfg.hydra.job_logging, cfg.hydra.verbose)
    except Exception as e:  # noqa: BLE001 (logging.config raises many types; all mean a bad override here)
        text = str(e).strip().splitlines()
        raise ConfigError("hydra.job_logging", f"logging cannot be configured: {text[0] if text else type(e).__name__}") from None
    if app.stopped is None:
        return app.job(settings)
    return run_tool(lambda: app.job(settings), app.stopped)


def _exit_for(error: BaseException, app: App, secrets: set[str]) -> NoReturn:
    if isinstance(error, SystemExit):
        raise error
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C before the job's own signal handling
        error = Interrupted(signal.SIGINT, *([app.stopped] if app.stopped else []))
    if isinstance(error, (LauncherError, Interrupted)):
        line, code = str(error), error.exit_code
    else:
        text = str(error).strip().splitlines()
        line, code = f"unexpected {type(error).__name__}: {text[0] if text else ''}".rstrip(": "), 1
    print(f"error: {redact_text(line, secrets)}", file=sys.stderr, flush=True)
    sys.exit(code)


def _config_text(app: App, argv: list[str]) -> str:
    """Hydra's ``--cfg job|hydra|all`` (with ``--resolve``, ``--package/-p``), secrets redacted."""
    which, resolve, package, overrides = "job", False, None, []
    args = iter(argv)
    for arg in args:
        if arg in _CFG_FLAGS:
            which = next(args, "job")
        elif arg.startswith("--cfg="):
            which = arg.split("=", 1)[1]
        elif arg == "--resolve":
            resolve = True
        elif arg in ("--package", "-p"):
            package = next(args, None)
        elif not arg.startswith("-"):
            overrides.append(arg)
    if which not in ("job", "hydra", "all"):
        raise ConfigError("--cfg", f"'{which}' is not one of job, hydra, all")
    cfg = compose_config(overrides, with_hydra=which != "job", config_name=app.config_name)
    if which == "hydra":
        return redacted_yaml(cfg, package="hydra")
    return redacted_yaml(cfg, resolve=resolve and which == "job", package=package)


def _hydra_prints(app: App, masked_argv: list[str]) -> int:
    """Hand ``--help``, ``--info`` and shell completion to Hydra, which prints and never runs the job."""

    @hydra.main(config_path=str(CONFIG_DIR), config_name=app.config_name, version_base=None)
    def never_runs(_cfg: DictConfig) -> None:
        raise ConfigError("", "internal: Hydra ran the job for a printing option")

    sys.argv = [sys.argv[0], *masked_argv]
    never_runs()
    return 0
