"""
The local high-water record: what Redis acknowledged, per entity, on this machine.

Redis can go back in time with its own manifest (a restore from an older AOF, a failover to a
replica that lagged): the manifest verify checks against lives in the same Redis and rolls
back with the data. This record does not. Beside the spill file (``{spill_dir}/{key}.acked``,
one per trader key) the event count each order and position list reached in every batch Redis
acknowledged is appended as one line - a JSON object ``{"orders:O-1": 5, ...}`` - followed by
``fsync``; a count of 0 means the entity was deleted (the facade's deletes, retention). The
appends are group-committed by a thread of the record's own (what several batches left, merged
into one line per ``fsync``), so a disk's fsync time is never in the write path: a sync-mode
write returns at Redis' acknowledgement, not at this machine's disk. What a crash leaves
unwritten is under-claimed, like a torn line. Accounts are not recorded: NautilusTrader purges account events, so their lists
shrink legitimately. A line torn by a crash is ignored (its batch is then under-claimed, never
over-claimed). The file is compacted (rewritten as one line, atomically) at a clean close
and whenever it grew past `_COMPACT_FACTOR` times its compacted size, so it stays bounded by the
number of live entities.

`read_record` gives verify what this machine saw acknowledged; a machine without the file
verifies against the manifest only.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from launcher.cache.write.commands import list_counts
from launcher.cache.write.spill import spill_path


# The log is compacted once it is this many times its last compacted size (and at least
# `_COMPACT_MIN_BYTES`): rewriting costs one write of the live entities, amortized.
_COMPACT_FACTOR = 4
_COMPACT_MIN_BYTES = 1 << 20


def acked_path(spill_dir: str | os.PathLike, trader_key: str) -> Path:
    """The record of `trader_key` in `spill_dir` (named like its spill file)."""
    return spill_path(spill_dir, trader_key).with_suffix(".acked")


def read_record(path: str | os.PathLike) -> dict[str, int]:
    """``{"orders:<id>" | "positions:<id>": acknowledged event count}``; empty when there is no file."""
    entries: dict[str, int] = {}
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return entries
    for line in data.splitlines():
        try:
            update = json.loads(line)
        except ValueError:
            continue  # torn by a crash mid-append: never fsync'd, never claimed
        _apply(entries, update)
    return entries


def remove_entities(path: str | os.PathLike, names: list[str]) -> None:
    """Record that `names` ("orders:<id>", ...) were deleted on purpose (offline retention)."""
    if names and Path(path).exists():
        _append(Path(path), {name: 0 for name in names})


def forget_record(path: str | os.PathLike) -> None:
    """The whole state was deleted on purpose (a flush): nothing acknowledged before it is expected back."""
    Path(path).unlink(missing_ok=True)


def _apply(entries: dict[str, int], update: dict[str, int]) -> None:
    for name, n in update.items():
        if n:
            entries[name] = n
        else:
            entries.pop(name, None)


def _ends_a_line(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _append(path: Path, update: dict[str, int]) -> int:
    line = json.dumps(update, separators=(",", ":")).encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(line)


class AckedRecord:
    """
    The record of one trader key, noted by its writer thread and written by a thread of its own
    (see the module docstring). `prefixes` maps the list-key prefix of orders and positions
    (``{trader key}:orders:``) to the collection name the record uses. `flush` writes what was
    noted so far before returning; `failed` holds the last disk error (the writer reports it).
    """

    def __init__(self, path: Path, prefixes: dict[str, str]) -> None:
        self.path = path
        self._prefixes = tuple(prefixes.items())
        self.failed: OSError | None = None
        try:
            self._entries = read_record(path)
            self._size = path.stat().st_size if path.exists() else 0
            torn = bool(self._size) and not _ends_a_line(path)
        except OSError as e:  # unreadable (a directory, no permission): kept as it is, reported by the writer
            self._entries, self._size, torn = {}, 0, False
            self.failed = e
        self._compacted = self._size
        self._lock = threading.Lock()  # entries and the updates not yet written
        self._io = threading.Lock()  # one writer of the file at a time, in the order updates were taken
        self._wake = threading.Condition(self._lock)
        self._pending: list[dict[str, int]] = []
        self._thread: threading.Thread | None = None
        if torn:
            self.compact()  # a torn last line would swallow the next one appended after it

    def note(self, ops: list[Any], lowered_only: bool = False) -> None:
        """
        The event counts `ops` (one acknowledged batch, in order) leave, handed to the record's
        thread to append and fsync. `lowered_only`: a batch the master applied but replicas did
        not acknowledge; only the lists it shortened on purpose (a delete, a NETTING position
        reopening) are recorded, or verify would expect the old, longer history back.
        """
        flushed, counts = list_counts(ops)
        with self._lock:
            update: dict[str, int] = {entity: 0 for entity in self._entries} if flushed else {}
            for key, n in counts.items():
                key = key.decode() if type(key) is bytes else key
                for prefix, collection in self._prefixes:
                    if key.startswith(prefix):
                        update[f"{collection}:{key[len(prefix):]}"] = n
                        break
            if lowered_only:
                update = {name: n for name, n in update.items() if n < self._entries.get(name, 0)}
            if not update:
                return
            _apply(self._entries, update)
            self._pending.append(update)
            self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"acked-{self.path.name}", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Write (and fsync) every update noted so far, in the calling thread if the record's thread has not."""
        self._write_pending()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._wake.wait()
            self._write_pending()

    def _write_pending(self) -> None:
        with self._io:
            with self._lock:
                pending, self._pending = self._pending, []
            if not pending:
                return
            merged: dict[str, int] = {}
            for update in pending:  # later batches' counts win, as when read back line by line
                merged.update(update)
            try:
                self._size += _append(self.path, merged)
                if self._size > max(_COMPACT_MIN_BYTES, _COMPACT_FACTOR * self._compacted):
                    self._compact_io()
            except OSError as e:
                self.failed = e

    def compact(self) -> None:
        """
        Rewrite the record as one line of its live entries (atomically: temp file, fsync, rename);
        a record that could not be read or written is left as it is.
        """
        if self.failed is not None:
            return
        with self._io:
            self._compact_io()

    def _compact_io(self) -> None:
        with self._lock:
            self._pending = []  # every noted update is in the entries written below
            entries = dict(self._entries)
        if not self.path.exists() and not entries:
            return
        tmp = self.path.with_suffix(".acked.tmp")
        line = json.dumps(entries, separators=(",", ":")).encode() + b"\n"
        with open(tmp, "wb") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._size = self._compacted = len(line)
