"""
Lost replies: the server applied a batch, the connection died before the client read the
reply. The batch is resent and must not duplicate anything.

A loopback TCP proxy between the backend and redis-server forwards a batch (MULTI ... EXEC)
to the server, reads the server's reply up to the start of the EXEC result (so the
transaction has been applied) and then closes both sockets instead of forwarding it.
"""

from __future__ import annotations

import socket
import threading
import time

from nautilus_trader.core.uuid import UUID4

from launcher.cache.resilient import ResilientCacheDatabase
from launcher.servers.redis_process import RedisProcess
from launcher.servers.redis_process import free_port
from launcher.state import layout as L
from launcher.store.connection import ConnectionSettings
from tests.support.trading_state import TRADER_ID
from tests.support.trading_state import CacheTee
from tests.support.trading_state import assert_exactly_once
from tests.support.trading_state import cache_config
from tests.support.trading_state import dump_state
from tests.support.trading_state import make_serializer
from tests.support.trading_state import native_adapter
from tests.support.trading_state import new_cache
from tests.support.trading_state import write_orders
from tests.support.trading_state import write_scenario


class ReplyDroppingProxy:
    """
    Forwards loopback TCP to `target_port`. While `drops_left` > 0, the reply to the first
    transaction seen after the previous dropped one is swallowed and both sockets closed; the
    following transaction (the client's resend) passes, then the next one is dropped again.
    """

    def __init__(self, target_port: int, drops: int = 0) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.drops_left = drops
        self.drops = 0
        self._armed = True
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, drops: int) -> None:
        with self._lock:
            self.drops_left = drops
            self._armed = True

    def close(self) -> None:
        self._closing = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            state = {"exec_sent": False, "held": b""}
            threading.Thread(target=self._upstream, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._downstream, args=(client, server, state), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        tail = b""
        try:
            while data := client.recv(65536):
                window = tail + data
                # The tail carries a split EXEC into the next read; once seen it is dropped, or the
                # command after it (the writer's INFO on a new connection) would count as an EXEC.
                if b"\r\nEXEC\r\n" in window:
                    state["exec_sent"] = True
                    window = b""
                tail = window[-16:]
                server.sendall(data)
        except OSError:
            pass
        _close(client, server)

    def _downstream(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        try:
            while data := server.recv(65536):
                if state["exec_sent"]:
                    with self._lock:
                        dropping = self._armed and self.drops_left > 0
                    if dropping:
                        state["held"] += data
                        if b"*" in state["held"]:  # the EXEC result started: the batch is applied
                            with self._lock:
                                self.drops_left -= 1
                                self.drops += 1
                                self._armed = False  # let the resend through
                            break
                        continue
                    if b"*" in data:
                        state["exec_sent"] = False
                        with self._lock:
                            self._armed = True  # the next transaction may be dropped again
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


def _through_proxy(proxy, tmp_path, port_for_config, **kwargs):
    config = cache_config(port_for_config, buffer_interval_ms=kwargs.pop("buffer_interval_ms", 20))
    return ResilientCacheDatabase(
        TRADER_ID, UUID4(), make_serializer(), config, spill_dir=str(tmp_path / "spill"),
        connection=ConnectionSettings(host="127.0.0.1", port=proxy.port, timeout_s=2.0), max_backoff_s=0.1, **kwargs,
    )


def test_batch_applied_but_reply_lost_is_resent_without_duplicates(redis_server, tmp_path):
    proxy = ReplyDroppingProxy(redis_server.port)
    proxy.arm(0)
    db = _through_proxy(proxy, tmp_path, redis_server.port)
    try:
        cache = new_cache(db)
        first = write_orders(cache, 10, prefix="a")
        assert db.wait_until_persisted(10)
        proxy.arm(1)
        second = write_orders(cache, 30, prefix="b", start_ns=1_800_000_000_000_000_000)
        assert db.wait_until_persisted(20)
        assert proxy.drops == 1
        stats = db.stats()
        assert stats.resent_batches >= 1
        assert stats.duplicates_skipped >= 1  # the resent appends found themselves already applied
        db.close()
        assert_exactly_once(redis_server.client(), db.trader_key, first + second)
    finally:
        proxy.close()


def test_every_batch_reply_lost_once_still_matches_native_byte_for_byte(tmp_path):
    """The full scenario (positions flips, accounts, snapshots, deletes) with every reply lost once."""
    reference = RedisProcess(tmp_path / "native", appendonly=False).start()
    target = RedisProcess(tmp_path / "ours", appendonly=False).start()
    proxy = ReplyDroppingProxy(target.port, drops=10_000)
    try:
        instance_id = UUID4()
        native = native_adapter(cache_config(reference.port), instance_id)
        ours = ResilientCacheDatabase(
            TRADER_ID, instance_id, make_serializer(), cache_config(target.port), spill_dir=str(tmp_path / "spill"),
            connection=ConnectionSettings(host="127.0.0.1", port=proxy.port, timeout_s=2.0), max_backoff_s=0.005,
            durability="sync",  # every write is its own batch: every batch's reply is lost once
        )
        tee = CacheTee(native, ours)
        write_scenario(new_cache(tee), tee)
        native.close()
        ours.close()
        stats = ours.stats()
        assert proxy.drops >= 50 and stats.resent_batches >= proxy.drops
        assert stats.duplicates_skipped >= 20
        tk = ours.trader_key
        assert dump_state(reference.client(), tk) == dump_state(target.client(), tk)
        meta = target.client().hgetall(f"{tk}:{L.MANIFEST_META}")
        assert meta[b"final"] == b"1"
    finally:
        proxy.close()
        reference.kill()
        target.kill()


def test_lost_reply_in_sync_mode(redis_server, tmp_path):
    """Sync writes return only after the (resent) batch is acknowledged; still exactly once."""
    proxy = ReplyDroppingProxy(redis_server.port, drops=0)
    db = _through_proxy(proxy, tmp_path, redis_server.port, durability="sync")
    try:
        proxy.arm(5)
        t0 = time.monotonic()
        orders = write_orders(new_cache(db), 5)
        assert time.monotonic() - t0 < 20
        assert proxy.drops == 5
        assert db.pending_writes() == 0
        db.close()
        assert_exactly_once(redis_server.client(), db.trader_key, orders)
    finally:
        proxy.close()
