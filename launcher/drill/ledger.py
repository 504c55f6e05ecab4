"""
The churn strategy's ledger (``strategies/churn.py``): the drill's truth, kept outside Redis.

Each line is one order or position event the strategy received, written and fsynced before
its handler returned::

    {"kind": "order", "id": "O-...", "event": "OrderAccepted", "event_id": "<uuid>", "n": 3}
    {"kind": "position", "id": "EUR/USD.SIM-...", "event": "PositionOpened", "n": 1}

`LedgerWatcher` tails the file while the node runs and stamps each line with the moment it
was first seen (monotonic clock, polled every few milliseconds), so a loss after SIGKILL
can be dated relative to the kill: with buffered writes only the last buffer interval may
be lost. A torn last line (the node died inside ``write``) is ignored: it was never
completed, so it was never a promise.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Entry:
    line: int  # 1-based line number
    kind: str  # "order" | "position"
    id: str
    event: str
    event_id: str | None
    n: int | None
    seen_at: float | None = None  # time.monotonic() when the watcher first read the line
    fill_id: str | None = None  # positions: the OrderFilled event that caused this position event

    @classmethod
    def parse(cls, line_no: int, text: str, seen_at: float | None) -> Entry:
        record = json.loads(text)
        return cls(
            line=line_no,
            kind=str(record["kind"]),
            id=str(record["id"]),
            event=str(record["event"]),
            event_id=record.get("event_id"),
            n=record.get("n"),
            seen_at=seen_at,
        )

    def describe(self) -> str:
        what = f"{self.event} n={self.n}" if self.n is not None else self.event
        ident = self.event_id or self.fill_id
        return f"{self.kind} {self.id} {what}" + (f" ({ident})" if ident else "")


class LedgerWatcher:
    """Tail `path` in a thread; `entries()` returns what was read, each stamped with when."""

    def __init__(self, path: Path, poll_s: float = 0.005) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self._entries: list[Entry] = []
        self._offset = 0
        self._partial = b""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ledger-{self.path.name}", daemon=True)
        self.bad_lines: list[int] = []

    def start(self) -> LedgerWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.poll_s)

    def poll(self) -> int:
        """Read what was appended since the last poll; return the number of entries so far."""
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except FileNotFoundError:
                return len(self._entries)
            now = time.monotonic()
            self._offset += len(data)
            data = self._partial + data
            *lines, self._partial = data.split(b"\n")
            for raw in lines:
                line_no = len(self._entries) + len(self.bad_lines) + 1
                try:
                    self._entries.append(Entry.parse(line_no, raw.decode(), now))
                except (ValueError, KeyError, UnicodeDecodeError):
                    self.bad_lines.append(line_no)
            return len(self._entries)

    def count(self) -> int:
        with self._lock:
            return len(self._entries)

    def stop(self) -> list[Entry]:
        """Stop tailing, read the rest; return every complete entry (torn last line ignored)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.poll()
        return self.entries()

    @property
    def torn_tail(self) -> bool:
        return bool(self._partial)

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)


def read_ledger(path: Path) -> list[Entry]:
    """Every complete entry of a ledger file (no timing information)."""
    watcher = LedgerWatcher(path)
    watcher.poll()
    for entry in watcher._entries:  # noqa: SLF001
        entry.seen_at = None
    return watcher.entries()


def attribute_fills(entries: list[Entry]) -> None:
    """
    Give each position entry the OrderFilled that caused it: NautilusTrader hands the strategy
    the order's OrderFilled and then, on the same thread, the position event it caused, so the
    fill is the order entry right before it.
    """
    previous: Entry | None = None
    for entry in entries:
        if entry.kind == "position" and previous is not None and previous.kind == "order" and previous.event == "OrderFilled":
            entry.fill_id = previous.event_id
        previous = entry
