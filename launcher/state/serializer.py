"""The serializer of the persisted payloads, built once, exactly as NautilusTrader's kernel builds it."""

from __future__ import annotations

import msgspec
from nautilus_trader.serialization.serializer import MsgSpecSerializer

from launcher.config.schema import CacheSettings


def serializer_for(cache: CacheSettings) -> MsgSpecSerializer:
    """The ``MsgSpecSerializer`` the kernel builds for this cache profile (encoding, timestamp format)."""
    return MsgSpecSerializer(
        encoding=msgspec.msgpack if cache.encoding.lower() == "msgpack" else msgspec.json,
        timestamps_as_str=True,
        timestamps_as_iso8601=cache.timestamps_as_iso8601,
    )
