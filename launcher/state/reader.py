"""
Bulk reads for fast recovery: SCAN, then pipelined MGET/LRANGE/HGETALL in chunks on one raw
pooled connection, replies parsed by hiredis. Connection errors during a read are retried
with backoff (a failover during start-up is followed) within a bounded time. A key of the
wrong Redis type (WRONGTYPE) is corrupt state: `CorruptState` naming the key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import redis
import tenacity

from launcher.retry import read_retry
from launcher.state.entities import CorruptState
from launcher.store.cluster import is_redirect
from launcher.store.resp import RawPipeline
from launcher.store.resp import exchange
from launcher.store.resp import pack_command


_RETRIABLE_READ = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    OSError,
)


class BulkReader:
    """Pipelined reads through `client`'s pool."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        chunk: int = 5000,
        retry_for_s: float = 10.0,
        on_round_trip: Callable[[str, float], None] | None = None,
    ) -> None:
        self._client = client
        self._chunk = max(1, chunk)
        self._on_round_trip = on_round_trip or (lambda op, s: None)
        self._retrying = read_retry(retry_for_s, _RETRIABLE_READ)

    def _with_connection(self, fn: Callable[[Any], Any]) -> Any:
        try:  # fast path: no retry machinery unless something goes wrong
            return self._once(fn)
        except _RETRIABLE_READ:
            pass
        for attempt in self._retrying:
            with attempt:
                return self._once(fn)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, fn: Callable[[Any], Any]) -> Any:
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            return fn(conn)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _exchange(self, conn: Any, commands: list[tuple]) -> list:
        """Send `commands` in chunks on `conn`; return the replies, error replies in place."""
        out: list = []
        t0 = time.monotonic()
        for i in range(0, len(commands), self._chunk):
            chunk = commands[i : i + self._chunk]
            out += exchange(conn, b"".join(pack_command(c) for c in chunk), len(chunk))
        self._on_round_trip("load_read", time.monotonic() - t0)
        return out

    def _pipeline(self, conn: Any, commands: list[tuple]) -> list:
        """Send `commands` in chunks on `conn`; return the replies (raise the first error reply)."""
        out = self._exchange(conn, commands)
        for command, value in zip(commands, out):
            if isinstance(value, redis.exceptions.ResponseError):
                raise _read_error(command, value)
        return out

    def replies(self, commands: list[tuple]) -> list:
        """
        One reply per command, an error reply as its ``ResponseError`` in place (for callers
        that report each failing key). Not retried: a connection error is raised as is.
        """
        return self._once(lambda conn: self._exchange(conn, commands))

    def scan(self, pattern: str, count: int = 10_000) -> list[str]:
        """Every key matching `pattern` (decoded), via SCAN; build `pattern` with `layout.scan_pattern`."""

        def run(conn: Any) -> list[str]:
            t0 = time.monotonic()
            keys: list[str] = []
            cursor = b"0"
            while True:
                reply = exchange(conn, pack_command((b"SCAN", cursor, b"MATCH", pattern, b"COUNT", count)), 1)[0]
                if isinstance(reply, redis.exceptions.ResponseError):
                    raise _read_error((b"SCAN",), reply)
                cursor, batch = reply
                keys.extend(k.decode() for k in batch)
                if cursor in (b"0", 0):
                    break
            confirm = getattr(conn, "confirm_owner", None)
            if confirm is not None:
                # Cluster: SCAN is not slot-checked, so a node that lost (or is handing over)
                # the trader's slot would answer with too few keys; ask it once more, after.
                confirm()
            self._on_round_trip("load_scan", time.monotonic() - t0)
            return list(dict.fromkeys(keys))  # SCAN may return a key more than once

        return self._with_connection(run)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []

        def run(conn: Any) -> list:
            commands = [(b"MGET", *keys[i : i + self._chunk]) for i in range(0, len(keys), self._chunk)]
            out: list = []
            for reply in self._pipeline(conn, commands):
                out.extend(reply)
            return out

        return self._with_connection(run)

    def lrange_all(self, keys: list[str]) -> list[list[bytes]]:
        if not keys:
            return []
        return self._with_connection(lambda conn: self._pipeline(conn, [(b"LRANGE", k, b"0", b"-1") for k in keys]))

    def lrange_chunks(self, keys: list[str], chunk: int = 1000) -> Iterator[tuple[int, list[list[bytes]]]]:
        """
        Yield (offset, lists) for `keys` in chunks; the next chunk's LRANGEs are already on the
        wire while the caller decodes the current one. Not retried: the caller retries the
        whole load (`retrying`).
        """
        commands = [(b"LRANGE", k, b"0", b"-1") for k in keys]
        for start, replies in self.stream(commands, chunk):
            for command, value in zip(commands[start:], replies):
                if isinstance(value, redis.exceptions.ResponseError):
                    raise _read_error(command, value)
            yield start, replies

    def stream(self, commands: list[tuple], chunk: int = 1000) -> Iterator[tuple[int, list]]:
        """
        Yield (offset, replies) for `commands` in chunks of `chunk`, error replies as their
        ``ResponseError`` in place; the next chunk is already on the wire while the caller
        works on the current one, so Redis produces it meanwhile. Not retried.
        """
        if not commands:
            return
        pool = self._client.connection_pool
        conn = pool.get_connection()
        complete = False
        try:
            pipe = RawPipeline(conn)
            starts = list(range(0, len(commands), chunk))

            def request(start: int) -> bytes:
                return b"".join([pack_command(c) for c in commands[start : start + chunk]])

            t0 = time.monotonic()
            pipe.send(request(starts[0]))
            for i, start in enumerate(starts):
                if i + 1 < len(starts):
                    pipe.send(request(starts[i + 1]))
                yield start, pipe.read(min(chunk, len(commands) - start))
            self._on_round_trip("load_read", time.monotonic() - t0)
            complete = True
        finally:
            if not complete:
                conn.disconnect()  # replies may still be in flight: never reuse this socket
            pool.release(conn)

    def retrying(self) -> tenacity.Retrying:
        """The read retry policy (bounded), for callers that retry a whole streamed load."""
        return self._retrying.copy()

    def command(self, *args: Any) -> Any:
        return self.commands(args)[0]

    def commands(self, *commands: tuple) -> list:
        """Several commands in one round trip; their replies in order."""
        return self._with_connection(lambda conn: self._pipeline(conn, list(commands)))


def _read_error(command: tuple, error: redis.exceptions.ResponseError) -> Exception:
    """
    A WRONGTYPE reply to a read of one key is corrupt state at that key; a cluster redirect
    (the slot moved) a ConnectionError, so the read is retried on the slot's owner; other
    errors as they are.
    """
    if is_redirect(error):
        return redis.exceptions.ConnectionError(f"cluster redirect while reading {command[0]!r}: {error}")
    if str(error).startswith("WRONGTYPE") and len(command) > 1:
        key = command[1].decode() if isinstance(command[1], bytes) else str(command[1])
        return CorruptState(key, f"cannot be read: {error}")
    return error
