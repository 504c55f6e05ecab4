"""
Bench only: ``python -m launcher.bench.probe [launcher overrides]`` is ``python -m launcher`` with
every write the node's cache makes to its cache database timed, for the node section's write
latency under the flood (launcher/bench/node.py). Production never imports this module.

The kernel builds its ``Cache`` around the cache database (NautilusTrader's adapter or the
launcher's resilient one, whichever the launcher chose); the probe hands the ``Cache`` a
`TimedDatabase` in front of it instead, which forwards every facade call and, for writes,
records when the call started (``time.monotonic_ns``, the system-wide clock the flood strategy's
window is in) and how long the caller was inside it. With ``cache.durability=sync`` that is the
time from the call to Redis' acknowledgement (the call returns only then); buffered, it is what
the node's thread waits before going on. The samples are written as JSON to the path in
`$LAUNCHER_BENCH_WRITE_TIMES` when the process exits (after the cache database was closed).
Cost per write: one extra Python call, two clock reads and three appends (about 1.3 µs on the
bench VM, against 13 µs and more for the write itself; the flood makes a few thousand writes a second).
"""

from __future__ import annotations

import atexit
import json
import os
import time
from array import array
from pathlib import Path
from typing import Any

from nautilus_trader.cache.facade import CacheDatabaseFacade


ENV = "LAUNCHER_BENCH_WRITE_TIMES"

# The facade's write methods (nautilus_trader/cache/facade.pxd); everything else is forwarded untimed.
WRITES = (
    "add", "add_currency", "add_instrument", "add_synthetic", "add_account", "add_order", "add_position",
    "index_venue_order_id", "index_order_position", "update_account", "update_order", "update_position",
    "update_actor", "update_strategy", "snapshot_order_state", "snapshot_position_state", "delete_order",
    "delete_position", "delete_account_event", "delete_actor", "delete_strategy", "heartbeat",
)


class WriteTimes:
    """Per write: its kind (index into WRITES), start (monotonic ns) and duration (ns)."""

    def __init__(self) -> None:
        self.kind = array("B")
        self.start_ns = array("q")
        self.took_ns = array("q")

    def add(self, kind: int, start_ns: int, took_ns: int) -> None:
        self.kind.append(kind)
        self.start_ns.append(start_ns)
        self.took_ns.append(took_ns)

    def dump(self, path: str | Path) -> None:
        data = {"kinds": list(WRITES), "kind": self.kind.tolist(), "start_ns": self.start_ns.tolist(),
                "took_ns": self.took_ns.tolist()}
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)  # the bench never reads half a file


def _timed(name: str, kind: int):
    def write(self: TimedDatabase, *args: Any, **kwargs: Any) -> None:
        t0 = time.monotonic_ns()
        try:
            getattr(self._inner, name)(*args, **kwargs)
        finally:
            self._times.add(kind, t0, time.monotonic_ns() - t0)

    write.__name__ = name
    return write


def _forwarded(name: str):
    def call(self: TimedDatabase, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    call.__name__ = name
    return call


class TimedDatabase(CacheDatabaseFacade):
    """A facade in front of `inner`: every call forwarded, writes timed into `times`."""

    def __init__(self, inner: Any, times: WriteTimes) -> None:
        # No CacheDatabaseFacade.__init__: it would only log READY a second time (inner did).
        self._inner = inner
        self._times = times

    def __getattr__(self, name: str) -> Any:  # anything beyond the facade (e.g. the resilient backend's stats)
        return getattr(self._inner, name)


# Every public facade method must be overridden here: the base class's own raise NotImplementedError.
for _name in dir(CacheDatabaseFacade):
    if not _name.startswith("_") and callable(getattr(CacheDatabaseFacade, _name)):
        setattr(TimedDatabase, _name, _timed(_name, WRITES.index(_name)) if _name in WRITES else _forwarded(_name))


def install(times: WriteTimes) -> None:
    """The kernel's ``Cache`` gets its database wrapped in a `TimedDatabase` (no database: nothing to time)."""
    import nautilus_trader.system.kernel as kernel  # noqa: PLC0415

    original = kernel.Cache

    def cache(*args: Any, database: Any = None, **kwargs: Any) -> Any:
        if database is not None:
            database = TimedDatabase(database, times)
        return original(*args, database=database, **kwargs)

    kernel.Cache = cache


def main() -> None:
    from launcher.__main__ import _execute  # noqa: PLC0415
    from launcher.cli import App  # noqa: PLC0415
    from launcher.cli import main as cli_main  # noqa: PLC0415
    from launcher.config.compose import CONFIG_NAME  # noqa: PLC0415
    from launcher.config.compose import to_settings  # noqa: PLC0415
    from launcher.config.schema import register  # noqa: PLC0415

    path = os.environ.get(ENV)
    if path:
        times = WriteTimes()
        install(times)
        atexit.register(times.dump, path)  # registered first, so it runs after the databases' own exit hooks
    cli_main(App(CONFIG_NAME, register, to_settings, _execute))


if __name__ == "__main__":
    main()
