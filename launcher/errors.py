"""
Failures the launcher reports with a documented exit code and one line, never a traceback.

Exit codes (README, "Exit codes"):
    0  success (for mode=verify: the recovered state is sound)
    1  unexpected internal error
    2  bad configuration
    3  Redis not reachable (in time, or for a reason retrying cannot fix)
    4  recovered state failed verification
    5  another node holds the single-writer lease for this trader
    6  the running node lost its single-writer lease and stopped trading
    7  a preflight safety check failed (e.g. an eviction policy that deletes state)
    8  Redis refused the launcher's writes (e.g. NOPERM); trading stopped, unacknowledged
       writes spilled to the spill file (replayed by the next start)
    9  a venue's client did not connect within run.timeout_connection_s (no network, a wrong
       endpoint), or the node did not start within run.timeout_reconciliation_s after that:
       the node stopped before trading, the lease was released
  130  SIGINT before the node was trading (143 for SIGTERM, 129 for SIGHUP): the launcher
       unwound cleanly; once the node trades, these signals stop it cleanly with exit 0
"""

from __future__ import annotations

import signal
import sys
from typing import NoReturn


class LauncherError(Exception):
    """Base class: `exit_code` is the process exit status, `str(self)` the one-line message."""

    exit_code = 1


class ConfigError(LauncherError):
    exit_code = 2

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


class RedisUnavailable(LauncherError):
    exit_code = 3


class VerifyFailed(LauncherError):
    exit_code = 4


class LeaseHeld(LauncherError):
    exit_code = 5


class LeaseLost(LauncherError):
    exit_code = 6


class PreflightFailed(LauncherError):
    exit_code = 7


class WritesRefused(LauncherError):
    exit_code = 8


class VenueUnreachable(LauncherError):
    exit_code = 9


class Interrupted(BaseException):
    """
    A stop signal before the node was trading; exit status 128 + the signal number (shell
    convention). A BaseException, like KeyboardInterrupt, so no `except Exception` on the way
    (a retry policy, a connection's error handling) can swallow it.
    """

    def __init__(self, sig: signal.Signals, what: str = "before the node was trading; nothing was started") -> None:
        self.exit_code = 128 + int(sig)
        super().__init__(f"stopped by {sig.name} {what}")


def exit_with(error: LauncherError | Interrupted) -> NoReturn:
    """End the process the documented way: one line on stderr, the error's exit code."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(error.exit_code)
