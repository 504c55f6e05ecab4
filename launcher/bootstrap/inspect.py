"""
``mode=inspect``: the persisted state in the spec's logical view, for operators.

Per venue: the account balances (total / free / locked per currency); per instrument on
it: the positions (side, quantity, average open price, realized PnL, unrealized PnL) and
the open orders; then every order with its event count. Unrealized PnL needs a price:
the launcher persists no quotes by default, so it is computed at the last fill price
persisted for that instrument (named, with its time); when there is none it says "n/a".

Loads through ``launcher.state.loader`` (the same loader verify uses).
"""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from typing import Any

import redis

from launcher.config.schema import LauncherConfig
from launcher.errors import RedisUnavailable
from launcher.state.loader import PersistedState
from launcher.state.loader import load_state


def _ts(ns: int) -> str:
    if not ns:
        return "?"
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="seconds")


def last_fill_prices(state: PersistedState) -> dict[str, tuple[Any, int]]:
    """Instrument id -> (last fill price, its ts_event), from the persisted order events."""
    last: dict[str, tuple[Any, int]] = {}
    for order in state.orders.values():
        for event in order.events:
            if type(event).__name__ != "OrderFilled":
                continue
            key = event.instrument_id.value
            if key not in last or event.ts_event >= last[key][1]:
                last[key] = (event.last_px, event.ts_event)
    return last


def _money(value: Any) -> str:
    return "n/a" if value is None else value.to_formatted_str()


def _position_line(position: Any, last: tuple[Any, int] | None) -> str:
    side = position.side.name if hasattr(position.side, "name") else str(position.side)
    text = (
        f"{position.id.value}  {side:<5} qty {position.quantity.to_formatted_str()}  "
        f"avg open {position.avg_px_open:.{position.price_precision}f}  "
        f"realized {_money(position.realized_pnl)}"
    )
    if position.is_closed:
        return text + f"  (closed {_ts(position.ts_closed)})"
    if last is None:
        return text + "  unrealized n/a (no persisted price)"
    price, ts = last
    try:
        unrealized = _money(position.unrealized_pnl(price))
    except Exception as e:  # noqa: BLE001
        unrealized = f"n/a ({type(e).__name__})"
    return text + f"  unrealized {unrealized} at last fill {price} ({_ts(ts)})"


def _order_line(order: Any) -> str:
    price = f" @ {order.price}" if getattr(order, "has_price", False) else ""
    return (
        f"{order.client_order_id.value}  {order.side_string()} {order.type_string()} "
        f"{order.quantity.to_formatted_str()}{price}  filled {order.filled_qty.to_formatted_str()}  "
        f"{order.status_string()}"
    )


def render_state(state: PersistedState, trader_id: str) -> str:
    """The logical view of an already loaded state."""
    last = last_fill_prices(state)
    venues: dict[str, dict[str, Any]] = {}

    def venue(name: str) -> dict[str, Any]:
        return venues.setdefault(name, {"accounts": [], "instruments": {}})

    for account in state.accounts.values():
        venue(account.id.get_issuer())["accounts"].append(account)
    for instrument_id in state.instruments:
        venue(instrument_id.rsplit(".", 1)[-1])["instruments"].setdefault(instrument_id, {"positions": [], "orders": []})
    for position in state.positions.values():
        v = venue(position.instrument_id.venue.value)
        v["instruments"].setdefault(position.instrument_id.value, {"positions": [], "orders": []})["positions"].append(position)
    for order in state.orders.values():
        if not order.is_open:
            continue
        v = venue(order.instrument_id.venue.value)
        v["instruments"].setdefault(order.instrument_id.value, {"positions": [], "orders": []})["orders"].append(order)

    lines = [
        f"Persisted state of trader {trader_id} (keys {state.trader_key}:*), "
        f"{state.keys_scanned} keys loaded in {state.load_time_s:.3f} s",
    ]
    if not venues and not state.orders:
        lines.append("  (nothing persisted)")
    for name in sorted(venues):
        v = venues[name]
        lines.append("")
        lines.append(f"Venue {name}")
        if not v["accounts"]:
            lines.append("  Account: none persisted")
        for account in sorted(v["accounts"], key=lambda a: a.id.value):
            base = account.base_currency.code if account.base_currency else "multi-currency"
            lines.append(f"  Account {account.id.value} ({account.type.name}, {base}), {account.event_count} events")
            for currency, balance in sorted(account.balances().items(), key=lambda kv: kv[0].code):
                lines.append(
                    f"    {currency.code:<5} total {balance.total.to_formatted_str():>24}  "
                    f"free {balance.free.to_formatted_str():>24}  locked {balance.locked.to_formatted_str():>20}",
                )
        for instrument_id in sorted(v["instruments"]):
            entry = v["instruments"][instrument_id]
            lines.append(f"  Instrument {instrument_id}")
            positions = sorted(entry["positions"], key=lambda p: (p.is_closed, p.id.value))
            if positions:
                lines.append("    Positions")
                lines += [f"      {_position_line(p, last.get(instrument_id))}" for p in positions]
            else:
                lines.append("    Positions: none")
            orders = sorted(entry["orders"], key=lambda o: o.client_order_id.value)
            if orders:
                lines.append("    Open orders")
                lines += [f"      {_order_line(o)}" for o in orders]
            else:
                lines.append("    Open orders: none")
    if state.orders:
        lines.append("")
        lines.append(f"Orders ({len(state.orders)}) and their persisted events")
        for order_id in sorted(state.orders):
            order = state.orders[order_id]
            lines.append(
                f"  {order_id:<28} {order.instrument_id.value:<20} {order.side_string():<4} "
                f"{order.type_string():<14} {order.status_string():<16} {order.event_count:>4} events",
            )
    if state.strategy_states:
        lines.append("")
        lines.append("Strategies with saved state: " + ", ".join(sorted(state.strategy_states)))
    if state.problems:
        lines.append("")
        lines.append(f"Could not load {len(state.problems)} item(s) (run mode=verify for the full check):")
        lines += [f"  - {p}" for p in state.problems]
    return "\n".join(lines)


def render_inspection(client: redis.Redis, settings: LauncherConfig) -> str:
    """Load the trader's persisted state and render the logical view."""
    try:
        state = load_state(client, settings)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise RedisUnavailable(f"Redis stopped answering while loading the state to inspect: {e}") from None
    text = render_state(state, str(settings.trader_id))
    locator = getattr(client.connection_pool, "locator", None)
    if locator is not None and locator.last_owner is not None:
        host, port = locator.last_owner
        text = f"Redis Cluster shard: slot {locator.slot} on primary {host}:{port}\n{text}"
    return text
