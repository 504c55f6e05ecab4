"""
The spill file: retained cache writes that did not fit in memory during an outage.

Format: an 8-byte header ``b"NTSPILL1"``, then records ``[u32 length][u32 crc32][payload]``
(big endian), payload = one msgpack-encoded write. Records are only ever appended, and every
append is followed by ``fsync`` (and the directory is fsync'd when the file is created), so a
record that `append` returned for survives a crash of the process or of the machine.

Reading tells a torn tail from damage. A torn tail is the end of the file after the last whole
record when no whole record follows it (the partial last append of a process or machine that
died; its writer never saw it fsync'd): the file is truncated there and the caller warns with the
number of bytes dropped. A bad record (short, CRC mismatch, impossible length) FOLLOWED by a whole
record is damage in the middle: `SpillFileDamaged` (exit 4) names the file and the bad byte range,
and the file is left untouched, since dropping what follows would silently lose fsync'd writes
(an append that a machine crash persisted out of order looks the same: refused, for a human).
A file whose header is not ``NTSPILL1`` is refused the same way. The format is unchanged since
the first version (which already had this header), so files of earlier versions are read as is.

Location: `resolve_spill_dir` - ``cache.spill_dir`` if absolute, else relative to the
installation's state directory (``$LAUNCHER_STATE_DIR``, else ``$XDG_STATE_HOME/nautilus-launcher``,
else ``~/.local/state/nautilus-launcher``), by default its ``spill`` subdirectory; never the
working directory, so a restart by a service manager finds what a shell run left.

Locks: ``<file>.lock`` (flock), removed by its holder on release; a lock file nobody holds
belongs to a dead process and is removed by the next instance that takes and releases it.

One file per trader key; the writer consumes it front to back (`read`/`advance`) while new
records may still be appended at the end, and removes it once everything in it has been
acknowledged by Redis.
"""

from __future__ import annotations

import fcntl
import glob
import mmap
import os
import re
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

from launcher.errors import ConfigError
from launcher.errors import VerifyFailed


MAGIC = b"NTSPILL1"
_HEADER = struct.Struct(">II")
_MAX_RECORD = 512 * 1024 * 1024

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class SpillFileDamaged(VerifyFailed):
    """A spill file that cannot be read without losing whole records (exit 4); it is left untouched."""


def state_dir() -> Path:
    """The installation's state directory (absolute; see the module docstring)."""
    explicit = os.environ.get("LAUNCHER_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative value is invalid and ignored
        return Path(xdg) / "nautilus-launcher"
    try:
        home = Path.home()
    except RuntimeError:
        raise ConfigError(
            "cache.spill_dir", "no home directory to put spill files in: set LAUNCHER_STATE_DIR or cache.spill_dir",
        ) from None
    return home / ".local" / "state" / "nautilus-launcher"


def default_spill_dir() -> Path:
    return state_dir() / "spill"


def resolve_spill_dir(spill_dir: str | os.PathLike | None) -> Path:
    """`spill_dir` as an absolute path: None/"" -> the default, relative -> under `state_dir()`."""
    if not spill_dir:
        return default_spill_dir()
    path = Path(spill_dir).expanduser()
    return path if path.is_absolute() else state_dir() / path


def spill_path(spill_dir: str | os.PathLike, trader_key: str) -> Path:
    """The spill file for `trader_key` (one per trader key, names made filesystem-safe)."""
    return Path(spill_dir) / f"{_safe(trader_key)}.spill"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")  # characters a file name does not take as they are


def _safe(trader_key: str) -> str:
    # Any other character is %XX, not one '_' for all: trader ids A/B-001 and A_B-001 shared a spill
    # file (and record), blocking or replaying each other's writes. Names made of these stay as they were.
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), trader_key)


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
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("cache.spill_dir", f"cannot create {directory}: {e.strerror}") from None
    primary = SpillFile(spill_path(directory, trader_key))
    mine = primary if primary.lock() else None
    if mine is None:
        mine = SpillFile(directory / f"{_safe(trader_key)}.{os.getpid()}-{uuid.uuid4().hex[:8]}.spill")
        mine.lock()
    orphans = []
    for path in _private_files(directory, trader_key) + legacy_spill_files(directory, trader_key):
        if path == mine.path:
            continue
        probe = SpillFile(path)
        if probe.lock():  # nobody alive owns it
            probe.unlock()
            orphans.append(path)
    _remove_stale_locks(directory)
    return mine, orphans


def spill_files(spill_dir: str | os.PathLike, trader_key: str) -> list[Path]:
    """
    Every spill file of `trader_key` in `spill_dir`, whoever holds it (read-only: no lock is
    taken): the usual ``{key}.spill`` first, then the private files, oldest first.
    """
    primary = spill_path(spill_dir, trader_key)
    return (([primary] if primary.exists() else []) + _private_files(Path(spill_dir), trader_key)
            + legacy_spill_files(spill_dir, trader_key))


def legacy_spill_files(spill_dir: str | os.PathLike, trader_key: str) -> list[Path]:
    """
    Spill files an older version left for `trader_key` under its old name (one ``_`` for every
    character now written ``%XX``), when that name differs: traders whose ids differ only in such
    characters shared it, so a file is this trader's when its records write keys under
    `trader_key`. One that cannot be read is listed too: refused later like any damaged file
    (loudly, kept), never skipped - it may hold this trader's unreplayed writes.
    """
    old = _legacy_safe(trader_key)
    if old == _safe(trader_key):
        return []
    directory = Path(spill_dir)
    private = re.compile(re.escape(old) + r"\.\d+-[0-9a-f]{8}\.spill")
    try:
        found = [p for p in directory.glob(f"{glob.escape(old)}.*.spill") if private.fullmatch(p.name)]
    except OSError:
        found = []
    candidates = ([directory / f"{old}.spill"] if (directory / f"{old}.spill").exists() else []) + sorted(
        found, key=lambda p: p.stat().st_mtime)
    return [p for p in candidates if _written_for(p, trader_key + ":")]


def _legacy_safe(trader_key: str) -> str:
    return _UNSAFE.sub("_", trader_key)


def _written_for(path: Path, prefix: str) -> bool:
    """Whether the spill file at `path` writes keys starting with `prefix` (True when it cannot be read)."""
    try:
        _, _, records = read_records(path)
        return any(len(cmd) > 1 and isinstance(cmd[1], str) and cmd[1].startswith(prefix)
                   for _, _, _, cmds in records for cmd in cmds)
    except (SpillFileDamaged, ValueError, TypeError):
        return True


def _private_files(directory: Path, trader_key: str) -> list[Path]:
    """The private ``{key}.{pid}-{random}.spill`` files of `trader_key` (see `claim_spill_file`), oldest first."""
    private = re.compile(re.escape(_safe(trader_key)) + r"\.\d+-[0-9a-f]{8}\.spill")
    found = [p for p in directory.glob(f"{_safe(trader_key)}.*.spill") if private.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def _remove_stale_locks(directory: Path) -> None:
    """Remove the lock files of spill files that no longer exist and that nobody alive holds."""
    for lock in directory.glob("*.spill.lock"):
        probe = SpillFile(lock.with_name(lock.name.removesuffix(".lock")))
        if not probe.exists and probe.lock():
            probe.unlock()  # removes the lock file


def encode_record(value: object) -> bytes:
    """One framed record: ``[u32 length][u32 crc32(payload)][payload]``, payload = msgpack(value)."""
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
        self.torn_bytes = 0  # dropped from the end by `open` (a torn tail)
        self._lock_fd: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def lock(self) -> bool:
        """Take the advisory lock of this spill file (``<file>.lock``); False if someone holds it."""
        if self._lock_fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            # Its holder removes the lock file before releasing it: a lock on a removed file
            # would be a second owner beside whoever creates the file anew. Try again then.
            try:
                current = os.stat(self._lock_path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                self._lock_fd = fd
                return True
            os.close(fd)

    def unlock(self) -> None:
        """Release the lock and remove its file (while still holding it: see `lock`)."""
        if self._lock_fd is not None:
            try:
                self._lock_path.unlink()
            except FileNotFoundError:
                pass
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def absorb(self, other: Path) -> int:
        """
        Append every whole record of the spill file `other` to this one, then delete `other`;
        0 when another live instance holds `other` (it is adopting it) or it is gone.
        """
        source = SpillFile(other)
        if not source.lock():
            return 0
        try:
            if not source.exists:
                return 0
            count = source.open()
            if count:
                values, _ = source.read(count)
                # Opens (validates) this file first; fsync'd before `other` is removed, so neither
                # a damaged file here nor a crash in between loses what `other` holds.
                self.append([encode_record(v) for v in values])
            source.remove()
            return count
        finally:
            source.close()
            source.unlock()

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def open(self) -> int:
        """
        Open (creating if needed), validate, count the records; return their number. A torn
        tail is cut off (`torn_bytes`); damage raises `SpillFileDamaged` and changes nothing.
        """
        if self._fd is not None:
            return self.unread
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, len(MAGIC), 0)
        if len(head) < len(MAGIC) and MAGIC.startswith(head):
            # New, or the header's own write was torn: no record was ever in it.
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, MAGIC, 0)
            os.fsync(self._fd)
            _fsync_dir(self.path.parent)
            self._size = len(MAGIC)
            self.read_offset = len(MAGIC)
            self.unread = 0
            return 0
        try:
            with mmap.mmap(self._fd, size, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as data:
                count, offset = _scan(self.path, data)
        except SpillFileDamaged:
            self.close()
            raise
        if offset != size:
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
            self.torn_records = 1
            self.torn_bytes = size - offset
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

    def rewind(self, offset: int, records: int) -> None:
        """Read the `records` consumed records from `offset` (before the read offset) again."""
        self.read_offset = offset
        self.unread += records

    @property
    def drained(self) -> bool:
        return self.read_offset >= self._size


def read_records(path: str | os.PathLike) -> tuple[int, int, Iterator[object]]:
    """
    Read-only: (whole records, bytes of a torn tail, an iterator of the decoded records) of the
    spill file at `path`, which is neither locked, created nor truncated (a check before anything
    is written, and ``mode=verify``). Raises `SpillFileDamaged` like `SpillFile.open`; a file
    that is missing, empty or only a torn header holds no records.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return 0, 0, iter(())
    except OSError as e:  # a directory or an unreadable file at its name: refused like damage, not a bug
        raise SpillFileDamaged(
            f"spill file {path} cannot be read ({e.strerror}); it was kept untouched and none of its writes were "
            "replayed: make it a readable spill file again, or move it out of the spill directory",
        ) from None
    if len(data) <= len(MAGIC) and MAGIC.startswith(data):
        return 0, 0, iter(())
    count, end = _scan(Path(path), memoryview(data))

    def records() -> Iterator[object]:
        offset = len(MAGIC)
        while offset < end:
            length, _ = _HEADER.unpack_from(data, offset)
            yield _decoder.decode(data[offset + _HEADER.size: offset + _HEADER.size + length])
            offset += _HEADER.size + length

    return count, len(data) - end, records()


def _scan(path: Path, data: memoryview) -> tuple[int, int]:
    """
    (whole records, offset after the last of them) of the bytes `data` of the file at `path`; raises
    `SpillFileDamaged` when it is not a spill file or a whole record follows a bad one.
    """
    if data[: len(MAGIC)] != MAGIC:
        raise SpillFileDamaged(
            f"{path} is not a spill file (its first {len(MAGIC)} bytes are not {MAGIC.decode()}); it was "
            "kept untouched and none of its writes were replayed: move it out of the spill directory once you "
            "know what it holds, then start again",
        )
    count = 0
    offset = len(MAGIC)
    while (end := _record_end(data, offset)) is not None:
        offset = end
        count += 1
    if offset == len(data):
        return count, offset
    # Past a bad record: a torn tail holds no whole record; any whole record means damage.
    following = next((at for at in range(offset + 1, len(data)) if _record_end(data, at) is not None), None)
    if following is None:
        return count, offset
    after = 0
    at: int | None = following
    while at is not None and at < len(data):
        at = _record_end(data, at)
        after += 1
    raise SpillFileDamaged(
        f"spill file {path} is damaged at bytes {offset}-{following} of {len(data)}: {count} whole record(s) "
        f"before it, {after} whole record(s) after it; it was kept untouched and none of its writes were replayed: "
        "restore it from a backup, or move it out of the spill directory to start without its writes",
    )


def _record_end(data: memoryview, offset: int) -> int | None:
    """The offset after the whole, CRC-valid record at `offset` of `data`, or None."""
    if offset + _HEADER.size > len(data):
        return None
    length, crc = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    # An empty payload is never written (msgpack is at least one byte): zeros are not records.
    if length == 0 or length > _MAX_RECORD or end > len(data):
        return None
    return end if zlib.crc32(data[offset + _HEADER.size: end]) == crc else None


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
