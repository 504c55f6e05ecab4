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

import os
import re
import struct
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
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", trader_key)
    return Path(spill_dir) / f"{safe}.spill"


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

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def open(self) -> int:
        """Open (creating if needed), validate, count the records; return their number."""
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
