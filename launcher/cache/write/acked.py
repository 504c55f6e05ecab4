"""
The local high-water record: what Redis acknowledged, per entity, on this machine.

Redis can go back in time with its own manifest (a restore from an older AOF, a failover to a
replica that lagged): the manifest verify checks against lives in the same Redis and rolls
back with the data. This record does not. Beside the spill file (``{spill_dir}/{key}.acked``,
one per trader key) the writer thread appends, for every batch Redis acknowledged, the event
count each order and position list reached, as one line - a JSON object ``{"orders:O-1": 5,
...}`` - followed by ``fsync``; a count of 0 means the entity was deleted (the facade's deletes,
retention). Accounts are not recorded: NautilusTrader purges account events, so their lists
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
    The record of one trader key, kept by its writer thread (see the module docstring).
    `prefixes` maps the list-key prefix of orders and positions (``{trader key}:orders:``) to
    the collection name the record uses.
    """

    def __init__(self, path: Path, prefixes: dict[str, str]) -> None:
        self.path = path
        self._prefixes = tuple(prefixes.items())
        self._entries = read_record(path)
        self._size = path.stat().st_size if path.exists() else 0
        self._compacted = self._size
        if self._size and not _ends_a_line(path):
            self.compact()  # a torn last line would swallow the next one appended after it

    def note(self, ops: list[Any], lowered_only: bool = False) -> None:
        """
        The event counts `ops` (one acknowledged batch, in order) leave, appended and fsync'd.
        `lowered_only`: a batch the master applied but replicas did not acknowledge; only the lists
        it shortened on purpose (a delete, a NETTING position reopening) are recorded, or verify
        would expect the old, longer history back.
        """
        flushed, counts = list_counts(ops)
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
        self._size += _append(self.path, update)
        if self._size > max(_COMPACT_MIN_BYTES, _COMPACT_FACTOR * self._compacted):
            self.compact()

    def compact(self) -> None:
        """Rewrite the record as one line of its live entries (atomically: temp file, fsync, rename)."""
        if not self.path.exists() and not self._entries:
            return
        tmp = self.path.with_suffix(".acked.tmp")
        line = json.dumps(self._entries, separators=(",", ":")).encode() + b"\n"
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
