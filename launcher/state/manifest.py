"""
Reading the launcher's manifest back (``launcher:manifest:*`` under the trader key, see
``launcher/state/layout.py``); ``launcher.bootstrap.manifest`` writes it for the native backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

import redis

from launcher.state import layout


@dataclass
class Manifest:
    """The manifest as read back; ``present`` is False when no manifest key exists."""

    orders: dict[str, int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, int] = field(default_factory=dict)
    final: bool = False
    updated_ns: int | None = None
    instance_id: str | None = None
    present: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "final": self.final,
            "updated_ns": self.updated_ns,
            "instance_id": self.instance_id,
            "orders": len(self.orders),
            "positions": len(self.positions),
            "accounts": len(self.accounts),
        }


def manifest_keys(trader_key: str) -> dict[str, str]:
    return {
        "orders": layout.full_key(trader_key, layout.MANIFEST_ORDERS),
        "positions": layout.full_key(trader_key, layout.MANIFEST_POSITIONS),
        "accounts": layout.full_key(trader_key, layout.MANIFEST_ACCOUNTS),
        "meta": layout.full_key(trader_key, layout.MANIFEST_META),
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _counts(fields: dict) -> dict[str, int]:
    """Entity id -> count, from a hash as read (one entry per order: a large state has 100k)."""
    try:
        names = list(map(bytes.decode, fields))  # as hiredis reads them
    except TypeError:
        names = list(map(_text, fields))
    return dict(zip(names, map(int, fields.values()), strict=True))


MANIFEST_PARTS = ("orders", "positions", "accounts", "meta")  # the order `manifest_from` takes the hashes in


def read_manifest(client: redis.Redis, trader_key: str) -> Manifest:
    """Read the four manifest hashes in one round trip."""
    keys = manifest_keys(trader_key)
    pipe = client.pipeline(transaction=False)
    for name in MANIFEST_PARTS:
        pipe.hgetall(keys[name])
    return manifest_from(*pipe.execute())


def manifest_from(orders: dict, positions: dict, accounts: dict, meta: dict) -> Manifest:
    """The manifest from its four hashes as read (field -> value, bytes or str)."""
    manifest = Manifest(
        orders=_counts(orders),
        positions=_counts(positions),
        accounts=_counts(accounts),
        present=bool(orders or positions or accounts or meta),
    )
    meta = {_text(k): _text(v) for k, v in meta.items()}
    manifest.final = meta.get("final") == "1"
    if meta.get("updated_ns", "").isdigit():
        manifest.updated_ns = int(meta["updated_ns"])
    manifest.instance_id = meta.get("instance_id") or None
    return manifest
