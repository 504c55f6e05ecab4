"""
Install retention into a built (not yet running) node: the `RetentionActor` when
``retention.enabled``, and the capped tick streams when ``cache.persist_quotes`` /
``cache.persist_trades``. Returns one function that stops what was started (call it after
the node stopped, before the process exits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from launcher.config.schema import Backend
from launcher.config.schema import LauncherConfig
from launcher.retention.actor import RedisFollowUp
from launcher.retention.actor import RetentionActor
from launcher.retention.policy import RetentionWindows


log = logging.getLogger("launcher.retention")


def install_retention(
    node: Any,
    settings: LauncherConfig,
    *,
    client: Any = None,
    trader_key: str | None = None,
    on_pass: Callable[[Any], None] | None = None,
    on_streams: Callable[[Any], None] | None = None,
    barrier: Callable[[float], bool] | None = None,
) -> Callable[[], None]:
    """
    Parameters
    ----------
    node : TradingNode
        Built, not running.
    client : redis.Redis, optional
        The launcher's own client (None with cache=memory: retention is then memory-only).
    trader_key : str, optional
        Where the node's state lives in Redis.
    on_pass, on_streams : callable, optional
        Receive each retention PassResult and the StreamWriter (metrics).
    barrier : callable, optional
        The cache backend's "everything so far persisted" wait (see RedisFollowUp).
    """
    closers: list[Callable[[], None]] = []
    native = settings.cache.backend == Backend.native
    if settings.retention.enabled:
        follow_up = None
        if client is not None:
            from launcher.state.serializer import serializer_for  # noqa: PLC0415

            follow_up = RedisFollowUp(client, trader_key, serializer_for(settings.cache), native=native, barrier=barrier)
            closers.append(follow_up.close)
        node.trader.add_actor(RetentionActor(
            RetentionWindows.from_settings(settings.retention),
            settings.retention.interval_s,
            follow_up,
            delete_account_events=not native,
            on_pass=on_pass,
        ))
    quotes, trades = bool(settings.cache.persist_quotes), bool(settings.cache.persist_trades)
    if client is None and (quotes or trades):
        log.warning("cache.persist_quotes/persist_trades ignored: cache=memory has no Redis to write them to")
    if client is not None and (quotes or trades):
        from launcher.retention.streams import MarketDataRecorder  # noqa: PLC0415
        from launcher.retention.streams import StreamWriter  # noqa: PLC0415

        writer = StreamWriter(client, settings.retention.stream_max_len, settings.retention.stream_max_age_s).start()
        closers.append(writer.close)
        if on_streams is not None:
            on_streams(writer)
        instruments = settings.venue.instrument_ids
        node.trader.add_actor(MarketDataRecorder(writer, trader_key, instruments, quotes=quotes, trades=trades))

    def close() -> None:
        for closer in reversed(closers):
            closer()

    return close
