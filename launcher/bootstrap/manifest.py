"""
The state manifest: what the node knew it had persisted, kept beside NautilusTrader's keys
so that verify can name anything Redis lost (``launcher/state/layout.py``)::

    {trader_key}:launcher:manifest:orders     hash  client order id -> events persisted
    {trader_key}:launcher:manifest:positions  hash  position id -> events persisted
    {trader_key}:launcher:manifest:accounts   hash  account id -> events persisted
    {trader_key}:launcher:manifest:meta       hash  final (0/1), updated_ns, instance_id

The resilient backend updates these hashes inside its own write batches. NautilusTrader's
native adapter cannot, so for it the launcher writes the manifest from the node's in-memory
``Cache`` with :func:`write_manifest_from_cache` (``final=True`` after a clean stop, once
the adapter has flushed its queue). Reading it back is the state layer's
(``launcher.state.manifest``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from launcher.state.manifest import manifest_keys
from launcher.state.manifest import read_manifest


log = logging.getLogger("launcher.bootstrap")

_HSET_CHUNK = 1000


def counts_from_cache(cache: Any) -> dict[str, dict[str, int]]:
    """Event counts per order, position and account held by a NautilusTrader ``Cache``."""
    persist_accounts = bool(getattr(cache, "persist_account_events", True))
    return {
        "orders": {o.client_order_id.value: int(o.event_count) for o in cache.orders()},
        "positions": {p.id.value: int(p.event_count) for p in cache.positions()},
        "accounts": (
            {a.id.value: len(a.events) for a in cache.accounts()} if persist_accounts else {}
        ),
    }


def write_manifest(
    client: redis.Redis,
    trader_key: str,
    counts: dict[str, dict[str, int]],
    *,
    instance_id: str,
    final: bool,
) -> None:
    """
    Replace the manifest with `counts` in one MULTI/EXEC: readers see the old manifest or
    the new one, never a mix. Entities no longer held (purged) drop out of it.
    """
    keys = manifest_keys(trader_key)
    pipe = client.pipeline(transaction=True)
    for name in ("orders", "positions", "accounts"):
        pipe.delete(keys[name])
        items = list(counts.get(name, {}).items())
        for start in range(0, len(items), _HSET_CHUNK):
            pipe.hset(keys[name], mapping=dict(items[start:start + _HSET_CHUNK]))
    pipe.hset(
        keys["meta"],
        mapping={"final": "1" if final else "0", "updated_ns": str(time.time_ns()), "instance_id": instance_id},
    )
    pipe.execute()


def write_manifest_from_cache(
    client: redis.Redis,
    trader_key: str,
    cache: Any,
    *,
    instance_id: str,
    final: bool,
) -> bool:
    """
    For the native backend: record, from the node's in-memory ``Cache``, how many events
    each order (``order.event_count``), position (``position.event_count``) and account
    (``len(account.events)``) has, plus ``meta`` {final, updated_ns, instance_id}.

    Call with ``final=True`` only after the adapter has flushed (node stopped, adapter
    closed): the manifest then states exactly what Redis must hold. A disposed node's
    Cache is empty (``Cache.reset()``): to keep the counts of a clean stop, take them with
    :func:`counts_from_cache` after the node stopped and before it is disposed, and write
    them with :func:`write_manifest` once the adapter is closed.

    Refuses (returns False, logs an error, leaves the manifest as it is) to replace a
    non-empty manifest with an empty cache's counts: that would erase the record of what
    Redis must hold.
    """
    counts = counts_from_cache(cache)
    if not any(counts.values()):
        existing = read_manifest(client, trader_key)
        if existing.orders or existing.positions or existing.accounts:
            log.error(
                "Manifest %s left unchanged: the node's cache holds nothing (disposed?) while the manifest records "
                "%d orders, %d positions, %d accounts",
                manifest_keys(trader_key)["meta"], len(existing.orders), len(existing.positions), len(existing.accounts),
            )
            return False
    write_manifest(client, trader_key, counts, instance_id=instance_id, final=final)
    return True


def mark_not_final(client: redis.Redis, trader_key: str, *, instance_id: str) -> None:
    """Record that a node is running on this state (a crash from here on is not a clean stop)."""
    client.hset(
        manifest_keys(trader_key)["meta"],
        mapping={"final": "0", "updated_ns": str(time.time_ns()), "instance_id": instance_id},
    )
