"""Replaying an order's persisted events: the one rule both loaders (backend and verify) share."""

from __future__ import annotations

from typing import Any

from nautilus_trader.model.enums import OrderType
from nautilus_trader.model.objects import Price
from nautilus_trader.model.orders import LimitOrder
from nautilus_trader.model.orders import MarketOrder


def transform_order(order: Any, init: Any, error: type[Exception] = ValueError) -> Any:
    """
    A later ``OrderInitialized`` in an order's list transforms it (e.g. an emulated order
    released as MARKET or LIMIT), as NautilusTrader's own ``load_order`` does; raises `error`
    for any other target type.
    """
    if init.order_type == OrderType.MARKET:
        return MarketOrder.transform_py(order, init.ts_init)
    if init.order_type == OrderType.LIMIT:
        return LimitOrder.transform_py(order, init.ts_init, Price.from_str(init.options["price"]))
    raise error(f"Cannot transform order to {init.order_type!r}")
