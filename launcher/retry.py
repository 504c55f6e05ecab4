"""
Named retry and polling policies (tenacity), in one place so that every loop that waits for
something says which policy it follows and the numbers live beside each other.

Each function returns a fresh policy object; callers pass it in (or take the default), in the
style of redis-py's ``Retry(backoff, retries)``: the code that retries does not choose how.

=====================  ==========================================================================
policy                 used for
=====================  ==========================================================================
``connect_backoff``    waiting for Redis at start-up (full-jitter exponential, bounded by a deadline)
``read_retry``         bulk reads of the state (short exponential backoff, bounded in seconds)
``write_backoff``      the writer thread's resends after a lost connection (exponential, capped)
``poll``               waiting for a condition with a deadline (servers started, a role changed)
=====================  ==========================================================================

All durations are seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tenacity


CONNECT_INITIAL_BACKOFF_S = 0.1
CONNECT_MAX_BACKOFF_S = 2.0
READ_INITIAL_BACKOFF_S = 0.05
READ_MAX_BACKOFF_S = 1.0
WRITE_INITIAL_BACKOFF_S = 0.05
POLL_INTERVAL_S = 0.02


def connect_backoff(
    timeout_s: float,
    retry: Callable[[BaseException], bool],
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.Retrying:
    """Retry while `retry(error)` says the error is transient, never past `timeout_s` in all."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(retry),
        stop=tenacity.stop_before_delay(max(0.0, float(timeout_s))),
        wait=tenacity.wait_random_exponential(multiplier=CONNECT_INITIAL_BACKOFF_S, max=CONNECT_MAX_BACKOFF_S),
        before_sleep=before_sleep,
        reraise=True,
    )


def read_retry(retry_for_s: float, errors: tuple[type[BaseException], ...]) -> tenacity.Retrying:
    """Retry a read that failed with one of `errors` for at most `retry_for_s`."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(errors),
        wait=tenacity.wait_exponential_jitter(multiplier=READ_INITIAL_BACKOFF_S, max=READ_MAX_BACKOFF_S,
                                              jitter=READ_INITIAL_BACKOFF_S),
        stop=tenacity.stop_after_delay(retry_for_s),
        reraise=True,
    )


def write_backoff(max_backoff_s: float) -> tenacity.wait.wait_base:
    """The writer's wait between resends: exponential from 50 ms (or less) up to `max_backoff_s`, jittered."""
    first = min(WRITE_INITIAL_BACKOFF_S, max_backoff_s)
    return tenacity.wait_exponential_jitter(multiplier=first, max=max_backoff_s, jitter=first)


class PollTimeout(TimeoutError):
    """A polled condition did not hold within its deadline."""


def poll[T](
    condition: Callable[[], T],
    timeout_s: float,
    what: str,
    interval_s: float = POLL_INTERVAL_S,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """
    Call `condition` every `interval_s` until it returns something truthy (returned) or
    `timeout_s` passed (`PollTimeout` naming `what`). Errors in `ignore` count as "not yet".
    """
    def not_yet(outcome: Any) -> bool:
        return not outcome

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(not_yet) | tenacity.retry_if_exception_type(ignore),
        stop=tenacity.stop_after_delay(timeout_s),
        wait=tenacity.wait_fixed(interval_s),
        reraise=True,
    )
    try:
        return retrying(condition)
    except tenacity.RetryError:
        raise PollTimeout(f"{what} did not happen within {timeout_s:g}s") from None
    except ignore as e:
        raise PollTimeout(f"{what} did not happen within {timeout_s:g}s (last error: {e})") from None
