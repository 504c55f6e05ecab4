"""
Raw RESP request/reply on a redis-py connection, parsed with hiredis.

redis-py's per-reply ``read_response`` costs ~10 us in Python; a batch of a thousand writes
has several thousand replies (QUEUED per command plus the EXEC array), and a recovery reads
tens of thousands of lists. This module packs commands with ``hiredis.pack_command`` and feeds
the socket straight into a ``hiredis.Reader`` (~0.1 us per reply). The connection itself
(pooling, AUTH/ACL, TLS, SELECT, Sentinel master discovery on connect) stays redis-py's.

Error replies are returned as ``redis.exceptions.ResponseError`` instances (not raised), at
top level and inside arrays alike; socket problems raise redis-py's ``ConnectionError`` /
``TimeoutError`` after disconnecting the connection.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import hiredis
import redis


_pack = hiredis.pack_command


def pack_command(args: tuple | list) -> bytes:
    """One command in RESP (str as UTF-8, int/float as decimal text, bytes as is)."""
    return _pack(args if type(args) is tuple else tuple(args))


def exchange(conn: Any, data: bytes, replies: int, timeout_s: float | None = None,
             while_waiting: Callable[[], None] | None = None) -> list:
    """
    Send `data` (packed commands) on `conn` and return exactly `replies` parsed replies.

    `timeout_s` overrides the socket timeout for this exchange (e.g. to cover a WAIT).
    `while_waiting` runs between sending and reading (work that overlaps the server's); it
    must not raise.
    """
    try:
        if conn._sock is None:
            conn.connect()
        sock = conn._sock
        previous = sock.gettimeout()
        if timeout_s is not None:
            sock.settimeout(timeout_s)
        try:
            sock.sendall(data)
            if while_waiting is not None:
                while_waiting()
            return _Feeder(sock).read(replies)
        finally:
            if timeout_s is not None and conn._sock is sock:
                sock.settimeout(previous)
    except hiredis.ProtocolError as e:
        conn.disconnect()
        raise redis.exceptions.ConnectionError(f"protocol error from {_where(conn)}: {e}") from e
    except TimeoutError as e:
        conn.disconnect()
        raise redis.exceptions.TimeoutError(f"timeout talking to {_where(conn)}") from e
    except redis.exceptions.ConnectionError:
        conn.disconnect()
        raise
    except OSError as e:
        conn.disconnect()
        raise redis.exceptions.ConnectionError(f"error talking to {_where(conn)}: {e}") from e
    except BaseException:
        conn.disconnect()
        raise


def _where(conn: Any) -> str:
    return f"{getattr(conn, 'host', '?')}:{getattr(conn, 'port', '?')}"


class RawPipeline:
    """
    Several requests in flight on one connection, replies read in order (one hiredis reader
    for the whole session, since a read may already hold the start of the next reply).
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        if conn._sock is None:
            self._guard(conn.connect)
        self._sock = conn._sock
        self._feeder = _Feeder(self._sock)

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except hiredis.ProtocolError as e:
            self.conn.disconnect()
            raise redis.exceptions.ConnectionError(f"protocol error from {_where(self.conn)}: {e}") from e
        except TimeoutError as e:
            self.conn.disconnect()
            raise redis.exceptions.TimeoutError(f"timeout talking to {_where(self.conn)}") from e
        except redis.exceptions.ConnectionError:
            self.conn.disconnect()
            raise
        except OSError as e:
            self.conn.disconnect()
            raise redis.exceptions.ConnectionError(f"error talking to {_where(self.conn)}: {e}") from e

    def send(self, data: bytes) -> None:
        self._guard(self._sock.sendall, data)

    def read(self, replies: int) -> list:
        return self._guard(self._read, replies)

    def _read(self, replies: int) -> list:
        return self._feeder.read(replies)


class _Feeder:
    """
    Socket -> hiredis reader, fed in small slices: hiredis compacts its buffer as replies are
    consumed, which is quadratic when a megabyte is fed at once (measured: 1 MB feeds make
    parsing 10k small list replies ~15x slower than 16 kB feeds).
    """

    _RECV = 1 << 18
    _SLICE = 1 << 14

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = hiredis.Reader(replyError=redis.exceptions.ResponseError)
        self._buffer = memoryview(b"")
        self._offset = 0

    def read(self, replies: int) -> list:
        out: list = []
        append = out.append
        gets, feed = self._reader.gets, self._reader.feed
        while len(out) < replies:
            reply = gets()
            if reply is not False:
                append(reply)
                continue
            if self._offset >= len(self._buffer):
                chunk = self._sock.recv(self._RECV)
                if not chunk:
                    raise redis.exceptions.ConnectionError("connection closed by the server")
                self._buffer = memoryview(chunk)
                self._offset = 0
            end = min(self._offset + self._SLICE, len(self._buffer))
            feed(self._buffer[self._offset : end])
            self._offset = end
        return out
