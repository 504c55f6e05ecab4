"""
The spec's latencies under the node flood (node section, launcher/bench/node.py), per Redis backend:

write (buffered)  the node's time inside each cache-database write (``time.monotonic_ns`` around the
                  facade call, launcher/bench/probe.py): what the node's thread waits per write.
write (sync)      the same measurement with ``cache.durability=sync``, where the call returns only once
                  Redis acknowledged the write: the time from the facade call to the acknowledgement.
read              ``load_order`` / ``load_position`` (alternating) of an order and a position the flood
                  wrote (picked at random from the trader's index sets, untimed), from a second process
                  (a thread of the bench's own process) at a fixed rate, so the read competes with the
                  flood for Redis and the CPUs as another reader of the trader's state would. The
                  resilient rows read with the resilient backend's read code, the native row with
                  NautilusTrader's adapter.

Only samples that started within the flood's window (first order to stop, ``time.monotonic``, which
is system-wide) count: start-up and the final flush are not the flood. Each backend's samples are
pooled over its runs before the percentiles are taken; every run's p99 is listed too.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from nautilus_trader.common.component import Logger
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.identifiers import PositionId

from launcher.bench import measure as M
from launcher.cache.resilient import ResilientCacheDatabase
from launcher.state import layout
from launcher.state.codec import detect_encoding
from launcher.state.reader import BulkReader
from launcher.store.connection import ConnectionSettings
from launcher.store.connection import connect


READ_OPS = ("load_order", "load_position")


class ResilientReads:
    """
    The resilient backend's own ``load_order`` / ``load_position`` code (ResilientCacheDatabase's
    methods, borrowed) on a reader that writes nothing. A second ResilientCacheDatabase for the
    flood's trader would write the trader's launcher manifest (start, clean stop) beside the node
    holding the lease; this one only has what those methods read.
    """

    load_order = ResilientCacheDatabase.load_order
    load_position = ResilientCacheDatabase.load_position
    load_instrument = ResilientCacheDatabase.load_instrument
    _instrument = ResilientCacheDatabase._instrument  # noqa: SLF001 (the very code the facade runs)
    _build_position = ResilientCacheDatabase._build_position  # noqa: SLF001

    def __init__(self, server: M.Server, trader_id: str) -> None:
        self._client = connect(ConnectionSettings(host=server.host, port=server.port, timeout_s=2.0))
        self._reader = BulkReader(self._client, retry_for_s=6.0, on_round_trip=self._round_trip)
        self.round_trips_s = 0.0  # the Redis round trips' share of the reads since the caller last reset it
        self._serializer = M.serializer()
        self._encoding = detect_encoding(self._serializer)
        self._k = M.trader_key(trader_id) + ":"
        self._instruments_seen: dict[str, tuple[bytes, Any]] = {}
        self._log = Logger("BenchReader")

    def _round_trip(self, operation: str, seconds: float) -> None:
        self.round_trips_s += seconds

    def _before_read(self) -> None:
        """Nothing to wait for: this reader submitted no write."""

    def close(self) -> None:
        self._client.close()


def read_facade(backend: str, server: M.Server, trader_id: str, dbs: M.Databases) -> Any:
    """The facade the reader uses for `backend`'s node: NautilusTrader's adapter for native, else the resilient reads."""
    if backend == M.NATIVE:
        return dbs.make(M.NATIVE, trader_id)  # writes nothing unless asked to
    return ResilientReads(server, trader_id)


class FloodReader(threading.Thread):
    """
    Reads at `rate_per_s` (alternating load_order and load_position) until `stop` is set; a read
    slower than the interval is followed at once by the next, and slots left behind by more than
    one interval are skipped (counted), not made up in a burst.
    """

    def __init__(self, facade: Any, server: M.Server, trader_id: str, rate_per_s: float) -> None:
        super().__init__(name=f"bench-reader-{trader_id}", daemon=True)
        self.facade = facade
        self.server = server
        self.key = M.trader_key(trader_id)
        self.interval_s = 1.0 / rate_per_s
        self.stop = threading.Event()
        # op -> [(monotonic start s, ms)]
        self.samples: dict[str, list[tuple[float, float]]] = {op: [] for op in READ_OPS}
        # The Redis round trips within each read (resilient reads only): what is left of a slow read is CPU.
        self.round_trips: list[tuple[float, float]] = []
        self.missing = {op: 0 for op in READ_OPS}  # reads that found nothing under an id the index named
        self.skipped_slots = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        client = self.server.client()
        try:
            n = 0
            next_at = time.monotonic()
            while not self.stop.is_set():
                op = READ_OPS[n % 2]
                index = layout.INDEX_ORDERS if op == "load_order" else layout.INDEX_POSITIONS
                member = client.srandmember(f"{self.key}:{index}")  # untimed: which entity, not the read
                if member is not None:
                    n += 1
                    self._read(op, member.decode())
                next_at += self.interval_s
                now = time.monotonic()
                if now - next_at > self.interval_s:
                    self.skipped_slots += int((now - next_at) / self.interval_s)
                    next_at = now
                self.stop.wait(max(0.0, next_at - now))
        except BaseException as e:  # noqa: BLE001 (reported by the bench after the run)
            self.error = e
        finally:
            client.close()

    def _read(self, op: str, ident: str) -> None:
        started = time.monotonic()
        counted = hasattr(self.facade, "round_trips_s")
        if counted:
            self.facade.round_trips_s = 0.0
        t0 = time.perf_counter()
        if op == "load_order":
            found = self.facade.load_order(ClientOrderId(ident))
        else:
            found = self.facade.load_position(PositionId(ident))
        ms = (time.perf_counter() - t0) * 1000
        self.samples[op].append((started, ms))
        if counted:
            self.round_trips.append((started, self.facade.round_trips_s * 1000))
        if found is None:
            self.missing[op] += 1


def write_samples(path: Path, window: list[float] | None) -> dict[str, list[float]]:
    """Write kind -> milliseconds of the writes that started within `window` (monotonic s)."""
    data = json.loads(path.read_text())
    out: dict[str, list[float]] = {}
    if not window:
        return out
    lo, hi = int(window[0] * 1e9), int(window[1] * 1e9)
    kinds = data["kinds"]
    for kind, start, took in zip(data["kind"], data["start_ns"], data["took_ns"]):
        if lo <= start <= hi:
            out.setdefault(kinds[kind], []).append(took / 1e6)
    return out


def in_window(samples: list[tuple[float, float]], window: list[float] | None) -> list[float]:
    if not window:
        return []
    return [ms for started, ms in samples if window[0] <= started <= window[1]]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    One backend's latencies from its runs' raw samples (each run: ``writes`` kind -> ms, ``reads``
    op -> ms, ``round_trips`` ms, ``read_missing``, ``skipped_slots``): pooled percentiles (ms) and
    each run's p99.
    """
    writes: dict[str, list[float]] = {}
    reads: dict[str, list[float]] = {op: [] for op in READ_OPS}
    round_trips = [ms for run in runs for ms in run.get("round_trips", [])]
    for run in runs:
        for kind, values in run["writes"].items():
            writes.setdefault(kind, []).extend(values)
        for op, values in run["reads"].items():
            reads[op].extend(values)
    every_write = [ms for values in writes.values() for ms in values]
    return {
        "write_ms": M.percentiles(every_write) or None,
        "write_ms_by_kind": {kind: M.percentiles(values) for kind, values in sorted(writes.items())},
        "read_ms": {op: M.percentiles(values) for op, values in reads.items() if values},
        "read_round_trips_ms": M.percentiles(round_trips) or None,
        "read_missing": {op: sum(run["read_missing"][op] for run in runs) for op in READ_OPS},
        "read_skipped_slots": sum(run["skipped_slots"] for run in runs),
        "runs_write_p99_ms": [_p99([ms for values in run["writes"].values() for ms in values]) for run in runs],
        "runs_read_p99_ms": {op: [_p99(run["reads"].get(op, [])) for run in runs] for op in READ_OPS},
    }


def _p99(values: list[float]) -> float | None:
    return M.percentiles(values)["p99"] if values else None

