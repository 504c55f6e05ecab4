"""
Rebuilding NautilusTrader objects from their persisted payloads, the one way every reader
does it (the resilient backend's loads, verify, inspect, retention, drills), mirroring
NautilusTrader's ``CacheDatabaseAdapter``: currencies from their map, accounts as
``AccountFactory.create`` + ``apply``, orders as ``OrderUnpacker.from_init`` + ``apply`` (a later
``OrderInitialized`` transforms the order, exactly where the native ``load_order`` does), and
positions as ``Position(instrument, first fill)`` + ``apply``.

Anything that cannot be rebuilt raises `CorruptState` naming the Redis key: the node's load
stops with exit code 4 and one line; verify records it as a problem of that entity.
"""

from __future__ import annotations

from typing import Any

from nautilus_trader.accounting.factory import AccountFactory
from nautilus_trader.model.enums import OrderType
from nautilus_trader.model.events import AccountState
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.events import OrderInitialized
from nautilus_trader.model.functions import currency_type_from_str
from nautilus_trader.model.objects import Currency
from nautilus_trader.model.objects import Price
from nautilus_trader.model.orders import LimitOrder
from nautilus_trader.model.orders import MarketOrder
from nautilus_trader.model.position import Position

from launcher.errors import VerifyFailed
from launcher.state.codec import EventDecoder


class CorruptState(VerifyFailed):
    """Persisted state that does not load, named by its Redis key (exit code 4, one line)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = one_line(problem)
        super().__init__(f"recovered state does not load: {key}: {self.problem}")


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line, at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(e: BaseException) -> str:
    return one_line(f"{type(e).__name__}: {e}")


def build_currency(code: str, c_map: dict) -> Currency:
    """A currency from its persisted map (precision, iso4217, name, currency_type)."""
    return Currency(
        code=code,
        precision=int(c_map["precision"]),
        iso4217=int(c_map["iso4217"]),
        name=c_map["name"],
        currency_type=currency_type_from_str(c_map["currency_type"]),
    )


def build_account(key: str, events: list) -> Any:
    """An account replayed from its decoded ``AccountState`` events (None for an empty list)."""
    if not events:
        return None
    for n, event in enumerate(events, start=1):
        if not isinstance(event, AccountState):
            raise CorruptState(key, f"events do not replay: event {n} is {type(event).__name__}, not AccountState")
    account = AccountFactory.create(events[0])
    for event in events[1:]:
        account.apply(event)
    return account


def transform_order(order: Any, init: OrderInitialized) -> Any:
    """
    A later ``OrderInitialized`` transforms the order (an emulated order released as MARKET or
    LIMIT), as NautilusTrader's own ``load_order`` does; no other target type exists there.
    """
    if init.order_type == OrderType.MARKET:
        return MarketOrder.transform_py(order, init.ts_init)
    if init.order_type == OrderType.LIMIT:
        return LimitOrder.transform_py(order, init.ts_init, Price.from_str(init.options["price"]))
    raise ValueError(f"cannot transform an order to {init.order_type!r}")


def decode_order(key: str, raw_events: list[bytes], decoder: EventDecoder) -> tuple[Any, list]:
    """
    The order built from its first payload (``OrderInitialized``) and its later events
    decoded; ``(None, [])`` for an empty list. Kept apart from `build_order` so a bulk load
    decodes a whole chunk, then builds it (each phase's code stays hot: measurably faster).
    """
    if not raw_events:
        return None, []
    try:
        order = decoder.order(raw_events[0])
        events = [decoder.decode(raw) for raw in raw_events[1:]]
    except Exception as e:  # any payload that does not decode is corrupt state
        raise CorruptState(key, f"events do not replay: an event does not decode: {describe(e)}") from e
    return order, events


def build_order(key: str, decoded: tuple[Any, list]) -> Any:
    """
    The order replayed from `decode_order`'s result exactly like the native ``load_order``:
    each event applied; an ``OrderInitialized`` after the first event transforms the order
    (the native rule: one directly after the initial event is applied, not a transform). A
    duplicate event or one the order refuses raises `CorruptState`. Like the native adapter it
    does not compare the order's id with the key's (verify reports such a mismatch). Returns
    None for an empty list.
    """
    order, events = decoded
    if order is None:
        return None
    seen = {order.init_id}
    try:
        for count, event in enumerate(events):
            if event.id in seen:
                raise ValueError(f"event {count + 2} ({type(event).__name__}) is a duplicate")
            seen.add(event.id)
            if count > 0 and type(event) is OrderInitialized:
                order = transform_order(order, event)
            else:
                order.apply(event)
    except Exception as e:  # an event the order refuses is corrupt state
        raise CorruptState(key, f"events do not replay: {describe(e)}") from e
    return order


def build_position(key: str, events: list, instrument: Any) -> Position:
    """A position from its decoded fills (opening fill first) and its instrument."""
    for n, event in enumerate(events, start=1):
        if not isinstance(event, OrderFilled):
            raise CorruptState(key, f"fills do not replay: event {n} is {type(event).__name__}, not OrderFilled")
    first = events[0]
    position = Position(instrument, first)
    seen = {first.id}
    try:
        for n, fill in enumerate(events[1:], start=2):
            if fill.id in seen:
                raise ValueError(f"event {n} is a duplicate fill")
            seen.add(fill.id)
            position.apply(fill)
    except Exception as e:  # a fill the position refuses is corrupt state
        raise CorruptState(key, f"fills do not replay: {describe(e)}") from e
    return position
