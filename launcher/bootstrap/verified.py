"""
The record of closed orders verify has built, per trader key, beside the spill file:
``{spill_dir}/{key}.verified``, msgpack ``{client order id: events_digest of its stored events}``.

A closed order never changes. Verify builds every plainly closed order in full before it lets
it wait until the node trades (launcher/state/loader.py `deferrable_order`): NautilusTrader's own
constructors and state machine judge it. A later start that reads the very same bytes from Redis
(the same digest) needs not build that order again before trading; the light reading still runs
(status, trade ids, the indexes' and positions' checks). Bytes that differ in any way are built
as if never seen, so damage is found before trading either way.

Written by `mode=run` once its verify passed, atomically (a new file renamed over the old one),
holding only the orders that waited in that start, under the NautilusTrader version that built
them (another version's constructors may judge differently: its record is not used). A record
that is missing, damaged or unreadable costs builds, never a check: it is read as empty (the
caller warns).
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import nautilus_trader

from launcher.cache.write.spill import spill_path


# Whose judgment the digests stand for: NautilusTrader's version and this module's rules (raise
# `_RULES` whenever what `deferrable_order` proves changes).
_RULES = 1
BUILT_BY = f"nautilus_trader {nautilus_trader.__version__}, rules {_RULES}"


class _Record(msgspec.Struct):
    built_by: str
    orders: dict[str, bytes]


_decode = msgspec.msgpack.Decoder(_Record).decode
_encode = msgspec.msgpack.Encoder().encode


def verified_path(spill_dir: str | os.PathLike, trader_key: str) -> Path:
    """The record of `trader_key` in `spill_dir` (named like its spill file)."""
    return spill_path(spill_dir, trader_key).with_suffix(".verified")


def read_verified(path: str | os.PathLike) -> tuple[dict[str, bytes], str | None]:
    """The record's entries, and why it was read as empty when it could not be read (None: fine or absent)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {}, None
    except OSError as e:
        return {}, f"{path} cannot be read ({e.strerror})"
    try:
        record = _decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        return {}, f"{path} is damaged ({e})"
    return (record.orders, None) if record.built_by == BUILT_BY else ({}, None)


def write_verified(path: str | os.PathLike, entries: dict[str, bytes]) -> None:
    """Replace the record with `entries` (written and fsync'd beside it, then renamed); raises OSError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(_encode(_Record(BUILT_BY, entries)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
