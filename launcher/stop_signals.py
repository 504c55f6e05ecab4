"""
SIGTERM, SIGINT and SIGHUP over the launcher's whole life, so a stop request never kills it abruptly.

Three phases, one policy object:

bootstrap  (waiting for Redis, preflight, lease, verify, building the node): the signal raises
           ``Interrupted``; the launcher unwinds (the lease is released, servers it started are
           stopped) and exits 128 + the signal number with one line.
running    (the node's event loop): the first signal stops the node cleanly, which disposes
           it and flushes the cache; every further one is logged and ignored. NautilusTrader's
           own handler removes SIGTERM handling after the first signal, so a second SIGTERM
           (an impatient operator, a supervisor repeating itself) would end the process with
           writes still buffered - this replaces it.
stopping   (after the node's loop is closed: final manifest, lease release): logged and ignored,
           so the last writes and the lease release are not cut short. SIGKILL still ends the
           process at any moment.

SIGHUP (the terminal of a foreground launcher closing, an SSH session dropping) is a stop
request like the others: its default action would end the process with the last buffer interval
unsent and the lease left to expire. The launcher reloads nothing, so there is no other meaning
to give it. A launcher started under ``nohup`` (SIGHUP ignored on entry) keeps ignoring it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

from launcher.errors import Interrupted
from launcher.errors import exit_with


log = logging.getLogger("launcher.signals")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopSignals:
    """The launcher's stop-signal policy; `received` is the first stop signal seen, if any."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._on_stop: Callable[[str], None] | None = None
        self._active = False
        self._signals: tuple[signal.Signals, ...] = ()

    def install(self) -> StopSignals:
        """Bootstrap phase. A no-op outside the main thread, where Python cannot take signals."""
        if threading.current_thread() is not threading.main_thread():
            return self
        self._active = True
        # A signal ignored on entry stays ignored: that is how nohup asks for SIGHUP to be.
        self._signals = tuple(sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN)
        for sig in self._signals:
            signal.signal(sig, self._interrupt)
        return self

    def attach(self, loop: asyncio.AbstractEventLoop, on_stop: Callable[[str], None]) -> None:
        """
        Running phase: called once the node is built (its kernel has installed NautilusTrader's
        handlers on `loop`; these replace them). `on_stop(reason)` asks the node to stop.
        """
        if not self._active:
            return
        self._on_stop = on_stop
        for sig in self._signals:
            loop.add_signal_handler(sig, self._stop_node, sig)

    def stopping(self, loop: asyncio.AbstractEventLoop) -> None:
        """
        Stopping phase: called once the node's loop has stopped, before the node is disposed.
        The loop's handlers are removed first, or closing the loop would later reset them to
        the defaults; removing one resets it too, for the microseconds until the next line.
        """
        if not self._active:
            return
        for sig in self._signals:
            if not loop.is_closed():
                loop.remove_signal_handler(sig)
            signal.signal(sig, self._ignore)

    def restore(self) -> None:
        """Give the process back Python's defaults (for callers that outlive the launcher)."""
        if not self._active:
            return
        for sig in self._signals:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        self._active = False

    def _interrupt(self, signum: int, _frame) -> None:
        sig = signal.Signals(signum)
        if self.received is None:
            self.received = sig
        raise Interrupted(sig)

    def _stop_node(self, sig: signal.Signals) -> None:
        if self.received is None:
            self.received = sig
            if self._on_stop is not None:  # it logs the reason
                self._on_stop(f"received {sig.name}; the cache is flushed before exit")
            return
        self._ignore(sig, None)

    def _ignore(self, signum: int, _frame) -> None:
        # Logged from a thread: this handler may run in the middle of the main thread's own
        # write to stdout, and a nested write to the same buffered stream raises.
        threading.Thread(
            target=log.warning,
            args=("Received %s while already stopping (the cache is being flushed): ignored; SIGKILL "
                  "aborts and loses what is not yet in Redis", signal.Signals(signum).name),
            name="stop-signal-log",
            daemon=True,
        ).start()


def run_tool[T](job: Callable[[], T], what: str) -> T:
    """
    Run `job`, the main of ``launcher.drill`` or ``launcher.bench``, which start servers and
    nodes of their own. SIGINT, SIGTERM and SIGHUP unwind it (its cleanup stops what it
    started) and end the process with one line naming `what` and exit 128 + the signal; the
    default action of SIGTERM/SIGHUP would leave those processes running. Further stop
    signals are ignored while it cleans up. Signals ignored on entry (nohup) stay ignored.
    """
    tool_signals = tuple(sig for sig in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(sig) is not signal.SIG_IGN)

    def interrupt(signum: int, _frame) -> None:
        for sig in (*tool_signals, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signal.Signals(signum), what)

    for sig in tool_signals:
        signal.signal(sig, interrupt)
    try:
        return job()
    except Interrupted as e:
        exit_with(e)
    except KeyboardInterrupt:  # Ctrl-C: what it started was stopped on the way out (its finally blocks)
        exit_with(Interrupted(signal.SIGINT, what))
