"""
The drill's check: every event in the ledger (the truth outside Redis) must be in the state
that loads from Redis.

Orders are checked by identity: the ledger names each event's id, and the recovered order
(``launcher.state.loader.load_state``, the same replay a node does) must hold that event.
Positions are checked through the fill that caused each position event: the recovered
position must hold that fill (and at least the ledger's event count).

Two things in a ledger are not promises and are counted apart, never hidden:

* superseded position events: when a NETTING position id reopens, NautilusTrader starts the
  position's list over (both backends ``DEL`` it), so the fills of earlier generations live on
  only in their orders, which are checked;
* in flight at a kill: NautilusTrader hands the strategy ``OrderInitialized`` *before* it adds
  the order to the cache (``Strategy.submit_order``), so when the very last ledger line of a
  killed node is such an event (``n`` is null: the cache did not hold the order yet), the
  order may legitimately be absent.

`plant_loss` damages persisted state on purpose so a test can prove the check catches it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from launcher.drill.ledger import Entry
from launcher.drill.ledger import attribute_fills
from launcher.state import layout
from launcher.state.loader import PersistedState


@dataclass
class Lost:
    entry: Entry
    reason: str
    age_ms: float | None = None  # how long before the fault the ledger line was seen (negative: after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.entry.kind,
            "id": self.entry.id,
            "event": self.entry.event,
            "event_id": self.entry.event_id,
            "fill_id": self.entry.fill_id,
            "n": self.entry.n,
            "ledger_line": self.entry.line,
            "ms_before_fault": None if self.age_ms is None else round(self.age_ms, 1),
            "reason": self.reason,
        }

    def __str__(self) -> str:
        age = ""
        if self.age_ms is not None:
            age = f" [ledger line seen at {-self.age_ms:+.0f} ms relative to the fault]"
        return f"{self.entry.describe()}: {self.reason}{age}"


@dataclass
class Comparison:
    written: int = 0  # ledger entries
    checked: int = 0
    recovered: int = 0
    superseded: int = 0
    in_flight: int = 0
    lost: list[Lost] = field(default_factory=list)
    orders: int = 0  # distinct order ids in the ledger
    positions: int = 0

    @property
    def lost_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for item in self.lost:
            seen.setdefault(item.entry.id, None)
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "events_written": self.written,
            "events_checked": self.checked,
            "events_recovered": self.recovered,
            "events_lost": len(self.lost),
            "superseded_position_events": self.superseded,
            "in_flight_at_kill": self.in_flight,
            "orders_in_ledger": self.orders,
            "positions_in_ledger": self.positions,
            "lost_ids": self.lost_ids,
            "lost": [item.to_dict() for item in self.lost],
        }


def compare(entries: list[Entry], state: PersistedState, *, killed: bool, fault_at: float | None = None) -> Comparison:
    """Check every ledger entry against the loaded state (see the module docstring)."""
    attribute_fills(entries)
    result = Comparison(written=len(entries))
    result.orders = len({e.id for e in entries if e.kind == "order"})
    result.positions = len({e.id for e in entries if e.kind == "position"})
    last_line = entries[-1].line if entries else 0
    order_events: dict[str, set[str]] = {}
    ledger_fills = {e.event_id for e in entries if e.kind == "order" and e.event == "OrderFilled"}

    def lose(entry: Entry, reason: str) -> None:
        age = None
        if fault_at is not None and entry.seen_at is not None:
            age = (fault_at - entry.seen_at) * 1000.0
        result.lost.append(Lost(entry, reason, age))

    # Orders: by event identity.
    for entry in entries:
        if entry.kind != "order":
            continue
        order = state.orders.get(entry.id)
        if order is None:
            if killed and entry.n is None and entry.event == "OrderInitialized" and entry.line == last_line:
                result.in_flight += 1
                continue
            result.checked += 1
            if entry.id in state.order_keys:
                lose(entry, "the order is in Redis but does not load (see verify)")
            else:
                lose(entry, f"the order is missing from Redis ({layout.ORDERS}:{entry.id} does not exist)")
            continue
        result.checked += 1
        ids = order_events.get(entry.id)
        if ids is None:
            ids = order_events[entry.id] = {e.id.value for e in order.events}
        if entry.event_id is not None and entry.event_id not in ids:
            lose(entry, f"event missing: Redis holds {order.event_count} event(s) of this order")
        elif entry.event_id is None and entry.n is not None and order.event_count < entry.n:
            lose(entry, f"Redis holds {order.event_count} event(s), the ledger saw {entry.n}")
        else:
            result.recovered += 1

    # Positions: generations split at PositionOpened; only the latest one is in positions:{id}.
    by_position: dict[str, list[Entry]] = {}
    for entry in entries:
        if entry.kind == "position":
            by_position.setdefault(entry.id, []).append(entry)
    for position_id, items in by_position.items():
        start = max((i for i, e in enumerate(items) if e.event == "PositionOpened"), default=0)
        result.superseded += start
        latest = items[start:]
        position = state.positions.get(position_id)
        if position is None:
            for entry in latest:
                result.checked += 1
                if position_id in state.position_keys:
                    lose(entry, "the position is in Redis but does not load (see verify)")
                else:
                    lose(entry, f"the position is missing from Redis ({layout.POSITIONS}:{position_id} does not exist)")
            continue
        fills = [f.id.value for f in position.events]
        if fills and fills[0] not in ledger_fills:
            # Redis is ahead: a newer generation the strategy never heard of (the node died or
            # stopped between the cache write and the strategy's handler). The ledger's latest
            # generation was superseded by it.
            result.superseded += len(latest)
            continue
        for entry in latest:
            result.checked += 1
            if entry.fill_id is not None:
                ok = entry.fill_id in fills and (entry.n is None or len(fills) >= entry.n)
            else:
                ok = entry.n is None or len(fills) >= entry.n
            if ok:
                result.recovered += 1
            else:
                lose(entry, f"Redis holds {len(fills)} fill(s) of this position, without the fill that caused this event")
    return result


def plant_loss(client: Any, trader_key: str, entries: list[Entry], count: int, seed: int) -> list[dict[str, Any]]:
    """
    Damage the persisted state on purpose: for `count` orders from the older half of the
    ledger (so no loss window can excuse them), alternately drop the last persisted event
    (``LTRIM 0 -2``) and delete the order's event list. Returns what was done, by id.
    """
    if count <= 0:
        return []
    order_ids: list[str] = []
    for entry in entries:
        if entry.kind == "order" and entry.id not in order_ids:
            order_ids.append(entry.id)
    older = order_ids[: max(count, len(order_ids) // 2)]
    rng = random.Random(seed)
    chosen = rng.sample(older, min(count, len(older)))
    planted = []
    for i, order_id in enumerate(chosen):
        key = layout.full_key(trader_key, f"{layout.ORDERS}:{order_id}")
        before = int(client.llen(key))
        if i % 2 == 0 and before > 1:
            client.ltrim(key, 0, -2)
            action = f"trimmed the last of {before} events"
        else:
            client.delete(key)
            action = f"deleted all {before} events"
        planted.append({"id": order_id, "key": key, "action": action})
    return planted
