"""
Retention policy (FR-003), pure: given the trading state and "now", what is outside the
retention windows. No Redis, no clock: the one-shot (``launcher/retention/apply.py``) and the
running node (``launcher/retention/actor.py``) both ask this module, so they agree.

Rules (an item is *outside* its window when ``ts + window <= now``, NautilusTrader's own
boundary in ``Cache.purge_closed_orders`` / ``purge_closed_positions`` / ``Account.purge_account_events``):

* a closed order goes once ``ts_closed + retention.orders_days`` has passed, unless
  - a linked (contingent) order of it is still open (NautilusTrader's rule), or
  - a position that is kept holds one of its fills: verify (and an auditor) must be able to
    trace every fill of a kept position back to its order, so an open position opened
    months ago keeps its opening order;
* a closed position goes once ``ts_closed + retention.positions_closed_hours`` has passed;
* an account's events older than ``retention.account_events_days`` go, except its newest
  event, which is always kept (it is the account's current state, even when older than the
  window);
* open orders and open positions are never candidates, whatever their age.

Windows are whole seconds, rounded *up* from the configured days/hours, so nothing younger
than the configured window is ever removed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from launcher.config.schema import RetentionSettings


NANOS_PER_SECOND = 1_000_000_000


def _whole_seconds(value: float, unit_s: int) -> int:
    # round(..., 6) first: 0.1 day * 86400 is 8640.000000000002 in binary floating point.
    return max(0, math.ceil(round(float(value) * unit_s, 6)))


@dataclass(frozen=True)
class RetentionWindows:
    """The three windows, in whole seconds."""

    orders_s: int
    positions_closed_s: int
    account_events_s: int

    @classmethod
    def from_settings(cls, retention: RetentionSettings) -> RetentionWindows:
        """From ``RetentionSettings`` (``orders_days``, ``positions_closed_hours``, ``account_events_days``)."""
        return cls(
            orders_s=_whole_seconds(retention.orders_days, 86_400),
            positions_closed_s=_whole_seconds(retention.positions_closed_hours, 3_600),
            account_events_s=_whole_seconds(retention.account_events_days, 86_400),
        )

    def describe(self) -> str:
        return (
            f"closed orders {_human(self.orders_s)}, closed positions {_human(self.positions_closed_s)}, "
            f"account events {_human(self.account_events_s)}"
        )


def _human(seconds: float) -> str:
    if seconds >= 86_400 and seconds % 86_400 == 0:
        return f"{seconds // 86_400:g}d"
    if seconds >= 3_600 and seconds % 3_600 == 0:
        return f"{seconds // 3_600:g}h"
    return f"{seconds:g}s"


def outside(ts_ns: int, window_s: int, now_ns: int) -> bool:
    """True when an item stamped `ts_ns` is outside a window of `window_s` at `now_ns` (boundary included)."""
    return int(ts_ns) + window_s * NANOS_PER_SECOND <= now_ns


@dataclass
class AccountTrim:
    """The events of one account that go: positions in its event list, oldest first."""

    account_id: str
    indexes: list[int]  # 0-based positions in the account's event list, ascending
    event_ids: list[str]
    ts_events: list[int]
    total: int  # events the account had
    newest_ts: int  # ts_event of the newest event, which is always kept

    @property
    def kept(self) -> int:
        return self.total - len(self.indexes)

    @property
    def is_prefix(self) -> bool:
        """The events that go are the oldest ones in list order (LTRIM can remove them)."""
        return self.indexes == list(range(len(self.indexes)))


@dataclass
class RetentionPlan:
    """What is outside the windows at `now_ns`, by id, plus what was kept on purpose and why."""

    now_ns: int
    windows: RetentionWindows
    orders: list[str] = field(default_factory=list)  # client order ids
    order_ts_closed: dict[str, int] = field(default_factory=dict)
    positions: list[str] = field(default_factory=list)  # position ids
    position_ts_closed: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, AccountTrim] = field(default_factory=dict)  # only accounts with events to remove
    kept_for_position: list[str] = field(default_factory=list)  # expired closed orders a kept position needs
    kept_for_linked: list[str] = field(default_factory=list)  # expired closed orders with an open linked order

    @property
    def account_events(self) -> int:
        return sum(len(trim.indexes) for trim in self.accounts.values())

    @property
    def empty(self) -> bool:
        return not (self.orders or self.positions or self.accounts)

    def counts(self) -> dict[str, int]:
        return {"orders": len(self.orders), "positions": len(self.positions), "account_events": self.account_events}


def plan_retention(
    *,
    orders: Iterable[Any],
    positions: Iterable[Any],
    accounts: Iterable[Any],
    now_ns: int,
    windows: RetentionWindows,
    order_lookup: Callable[[str], Any] | None = None,
) -> RetentionPlan:
    """
    Decide what is outside the windows.

    Parameters
    ----------
    orders : iterable of nautilus_trader Order
        At least every closed order (open ones are ignored, so passing all orders is fine).
    positions : iterable of nautilus_trader Position
        Every position, open and closed: the kept ones protect the orders of their fills.
    accounts : iterable of nautilus_trader Account
        Their ``events`` lists, oldest first, as persisted.
    now_ns : int
        UNIX nanoseconds to judge against.
    order_lookup : callable, optional
        client order id -> Order (or None), for linked orders not among `orders`.
    """
    plan = RetentionPlan(now_ns=int(now_ns), windows=windows)

    needed_orders: set[str] = set()
    for position in positions:
        pid = position.id.value
        if position.is_closed and outside(position.ts_closed, windows.positions_closed_s, now_ns):
            plan.positions.append(pid)
            plan.position_ts_closed[pid] = int(position.ts_closed)
        else:
            needed_orders.update(coid.value for coid in position.client_order_ids)

    closed = []
    by_id: dict[str, Any] = {}
    for order in orders:
        by_id[order.client_order_id.value] = order
        if order.is_closed:
            closed.append(order)

    def lookup(coid: str) -> Any:
        if coid in by_id:
            return by_id[coid]
        return order_lookup(coid) if order_lookup is not None else None

    for order in closed:
        coid = order.client_order_id.value
        if not outside(order.ts_closed, windows.orders_s, now_ns):
            continue
        if order.linked_order_ids and any(
            (linked := lookup(linked_id.value)) is not None and linked.is_open for linked_id in order.linked_order_ids
        ):
            plan.kept_for_linked.append(coid)
            continue
        if coid in needed_orders:
            plan.kept_for_position.append(coid)
            continue
        plan.orders.append(coid)
        plan.order_ts_closed[coid] = int(order.ts_closed)

    for account in accounts:
        trim = plan_account_events(account.id.value, account.events, now_ns, windows.account_events_s)
        if trim is not None:
            plan.accounts[trim.account_id] = trim

    plan.orders.sort()
    plan.positions.sort()
    plan.kept_for_position.sort()
    plan.kept_for_linked.sort()
    return plan


def plan_account_events(account_id: str, events: list[Any], now_ns: int, window_s: int) -> AccountTrim | None:
    """The events of one account outside the window, never its newest (last) event; None if none go."""
    if len(events) <= 1:
        return None
    last = len(events) - 1
    indexes = [i for i, event in enumerate(events) if i != last and outside(event.ts_event, window_s, now_ns)]
    if not indexes:
        return None
    return AccountTrim(
        account_id=account_id,
        indexes=indexes,
        event_ids=[events[i].id.value for i in indexes],
        ts_events=[int(events[i].ts_event) for i in indexes],
        total=len(events),
        newest_ts=int(events[last].ts_event),
    )
