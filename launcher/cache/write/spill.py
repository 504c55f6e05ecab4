"""
The spill file: retained cache writes that did not fit in memory during an outage.

Format: an 8-byte header ``b"NTSPILL1"``, then records ``[u32 length][u32 crc32][payload]``
(big endian), payload = one msgpack-encoded write. Records are only ever appended, and every
append is followed by ``fsync`` (and the directory is fsync'd when the file is created), so a
record that `append` returned for survives a crash of the process or of the machine.

Reading tolerates a torn tail (a record cut short by a crash during an append, or a bad CRC):
reading stops there, the file is truncated to the last whole record, and the loss of the torn
record - which its writer never saw acknowledged - is reported by the caller.

One file per trader key; the writer consumes it front to back (`read`/`advance`) while new
records may still be appended at the end, and removes it once everything in it has been
acknowledged by Redis.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import uuid
import zlib
from pathlib import Path

import msgspec


MAGIC = b"NTSPILL1"
_HEADER = struct.Struct(">II")
_MAX_RECORD = 512 * 1024 * 1024

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def spill_path(spill_dir: str | os.PathLike, trader_key: str) -> Path:
    """The spill file for `trader_key` (one per trader key, names made filesystem-safe)."""
    return Path(spill_dir) / f"{_safe(trader_key)}.spill"


def _safe(trader_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", trader_key)


def claim_spill_file(spill_dir: str | os.PathLike, trader_key: str) -> tuple[SpillFile, list[Path]]:
    """
    The spill file this instance owns for `trader_key`, locked for its lifetime, and the
    spill files that other (dead) instances left for the same key, oldest first.

    The usual file is ``{key}.spill``; when another live instance holds it (two writers for one
    trader in one place - a misconfiguration, but never a reason to corrupt a file), this one
    gets a private ``{key}.{pid}-{random}.spill``. Files whose lock is free belong to nobody
    alive: they are the leftovers of a crash, to be replayed first.
    """
    directory = Path(spill_dir)
    directory.mkdir(parents=True, exist_ok=True)
    primary = SpillFile(spill_path(directory, trader_key))
    mine = primary if primary.lock() else None
    if mine is None:
        mine = SpillFile(directory / f"{_safe(trader_key)}.{os.getpid()}-{uuid.uuid4().hex[:8]}.spill")
        mine.lock()
    orphans = []
    for path in sorted(directory.glob(f"{_safe(trader_key)}.*.spill"), key=lambda p: p.stat().st_mtime):
        if path == mine.path:
            continue
        probe = SpillFile(path)
        if probe.lock():  # nobody alive owns it
            probe.unlock()
            orphans.append(path)
    return mine, orphans


def encode_record(value: object) -> bytes:
    payload = _encoder.encode(value)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class SpillFile:
    """
    An append-only, fsync'd file of records, consumed from the front.

    Not thread-safe: the owner serialises access (the writer's lock).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._size = 0  # bytes of whole records (incl. header)
        self.read_offset = len(MAGIC)
        self.unread = 0  # records from read_offset to the end
        self.torn_records = 0
        self._lock_fd: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def lock(self) -> bool:
        """Take the advisory lock of this spill file (``<file>.lock``); False if someone holds it."""
        if self._lock_fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def absorb(self, other: Path) -> int:
        """Append every whole record of the spill file `other` to this one, then delete `other`."""
        source = SpillFile(other)
        count = source.open()
        records = []
        if count:
            values, _ = source.read(count)
            records = [encode_record(v) for v in values]
        source.remove()
        if records:
            self.append(records)
        return len(records)

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def open(self) -> int:
        """Open (creating if needed), validate, count the records; return their number."""
        if self._fd is not None:
            return self.unread
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if created or os.fstat(self._fd).st_size == 0:
            os.write(self._fd, MAGIC)
            os.fsync(self._fd)
            _fsync_dir(self.path.parent)
            self._size = len(MAGIC)
            self.read_offset = len(MAGIC)
            self.unread = 0
            return 0
        with open(self.path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError(f"{self.path} is not a spill file")
            count = 0
            offset = len(MAGIC)
            while True:
                header = f.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    if header:
                        self.torn_records += 1
                    break
                length, crc = _HEADER.unpack(header)
                payload = f.read(length) if length <= _MAX_RECORD else b""
                if len(payload) != length or zlib.crc32(payload) != crc:
                    self.torn_records += 1
                    break
                offset += _HEADER.size + length
                count += 1
        if offset != os.fstat(self._fd).st_size:
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        self._size = offset
        self.read_offset = len(MAGIC)
        self.unread = count
        return count

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """Close and delete the file (everything in it was acknowledged)."""
        self.close()
        try:
            self.path.unlink()
            _fsync_dir(self.path.parent)
        except FileNotFoundError:
            pass
        self._size = 0
        self.read_offset = len(MAGIC)
        self.unread = 0

    # -- data -------------------------------------------------------------------------------

    def append(self, records: list[bytes]) -> int:
        """Append framed records (from `encode_record`), fsync, return the offset of the first."""
        if self._fd is None:
            self.open()
        start = self._size
        data = b"".join(records)
        view = memoryview(data)
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, view[written:], self._size + written)
        os.fsync(self._fd)
        self._size += len(data)
        self.unread += len(records)
        return start

    def read(self, max_records: int) -> tuple[list[object], int]:
        """Up to `max_records` decoded records from the read offset, and the offset after them."""
        values: list[object] = []
        offset = self.read_offset
        while len(values) < max_records and offset < self._size:
            header = os.pread(self._fd, _HEADER.size, offset)
            length, crc = _HEADER.unpack(header)
            payload = os.pread(self._fd, length, offset + _HEADER.size)
            if len(payload) != length or zlib.crc32(payload) != crc:
                raise ValueError(f"{self.path}: corrupt record at offset {offset}")
            values.append(_decoder.decode(payload))
            offset += _HEADER.size + length
        return values, offset

    def advance(self, offset: int, records: int) -> None:
        """Mark the records before `offset` as consumed (acknowledged)."""
        self.read_offset = offset
        self.unread -= records

    @property
    def drained(self) -> bool:
        return self.read_offset >= self._size


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
