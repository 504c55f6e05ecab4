"""
High-churn strategy for restart drills and benchmarks: at a fixed rate it places limit
orders away from the market, modifies and cancels them, and opens and closes positions
with market orders, so every kind of order and position event flows through the cache.

With ``ledger_path`` set, every order and position event it receives is appended to a
JSON-lines ledger and fsynced before the handler returns. NautilusTrader updates the cache
before it hands an event to a strategy, so the ledger is an outside record of what the
cache held, one that survives SIGKILL of the node (its log does not).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from decimal import Decimal

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.events import OrderEvent
from nautilus_trader.model.events import PositionEvent
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy


class ChurnConfig(StrategyConfig, frozen=True):
    """
    Parameters
    ----------
    instrument_id : InstrumentId
        The instrument to trade (the launcher fills in the venue's first instrument).
    actions_per_second : float
        Order actions (place, modify, cancel, market) per second.
    trade_size : Decimal
        Quantity of each order, units of the base currency.
    max_working_orders : int
        Limit orders kept resting at most.
    ledger_path : str, optional
        JSON-lines file of every order/position event received, fsynced per event.
    """

    instrument_id: InstrumentId
    actions_per_second: float = 20.0
    trade_size: Decimal = Decimal("10000")
    max_working_orders: int = 5
    ledger_path: str | None = None

    def __post_init__(self) -> None:
        if self.actions_per_second <= 0:
            raise ValueError(f"actions_per_second must be positive, was {self.actions_per_second}")
        if self.trade_size <= 0:
            raise ValueError(f"trade_size must be positive, was {self.trade_size}")


class ChurnStrategy(Strategy):
    _CYCLE = ("place", "place", "modify", "cancel", "market")

    def __init__(self, config: ChurnConfig) -> None:
        super().__init__(config)
        self._instrument = None
        self._last_quote: QuoteTick | None = None
        self._step = 0
        self._ledger_fd: int | None = None

    def on_start(self) -> None:
        self._instrument = self.cache.instrument(self.config.instrument_id)
        if self._instrument is None:
            self.log.error(f"No instrument {self.config.instrument_id} in the cache; stopping")
            self.stop()
            return
        if self.config.ledger_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.config.ledger_path)), exist_ok=True)
            self._ledger_fd = os.open(self.config.ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.subscribe_quote_ticks(self.config.instrument_id)
        self.clock.set_timer(
            name="churn",
            interval=timedelta(seconds=1.0 / self.config.actions_per_second),
            callback=self._on_timer,
        )

    def on_quote_tick(self, tick: QuoteTick) -> None:
        self._last_quote = tick

    def _on_timer(self, event) -> None:
        if self._last_quote is None:
            return
        action = self._CYCLE[self._step % len(self._CYCLE)]
        self._step += 1
        getattr(self, f"_{action}")()

    def _working(self):
        return [o for o in self.cache.orders_open(strategy_id=self.id) if o.has_price and not o.is_pending_update]

    def _place(self) -> None:
        if len(self._working()) >= self.config.max_working_orders:
            return self._cancel()
        side = OrderSide.BUY if self._step % 2 else OrderSide.SELL
        tick = float(self._instrument.price_increment)
        if side == OrderSide.BUY:
            price = float(self._last_quote.bid_price) - 20 * tick
        else:
            price = float(self._last_quote.ask_price) + 20 * tick
        order = self.order_factory.limit(
            instrument_id=self.config.instrument_id,
            order_side=side,
            quantity=self._instrument.make_qty(self.config.trade_size),
            price=self._instrument.make_price(price),
            post_only=True,
        )
        self.submit_order(order)

    def _modify(self) -> None:
        working = self._working()
        if not working:
            return self._place()
        order = working[0]
        tick = float(self._instrument.price_increment)
        shift = -tick if order.side == OrderSide.BUY else tick
        self.modify_order(order, price=self._instrument.make_price(float(order.price) + shift))

    def _cancel(self) -> None:
        working = [o for o in self._working() if not o.is_pending_cancel]
        if working:
            self.cancel_order(working[0])

    def _market(self) -> None:
        net = self.portfolio.net_position(self.config.instrument_id)
        if net != 0:
            side = OrderSide.SELL if net > 0 else OrderSide.BUY
            quantity = abs(net)
        else:
            side = OrderSide.BUY if (self._step // len(self._CYCLE)) % 2 else OrderSide.SELL
            quantity = self.config.trade_size
        order = self.order_factory.market(
            instrument_id=self.config.instrument_id,
            order_side=side,
            quantity=self._instrument.make_qty(quantity),
        )
        self.submit_order(order)

    def on_order_event(self, event: OrderEvent) -> None:
        if self._ledger_fd is None:
            return
        order = self.cache.order(event.client_order_id)
        self._append({
            "kind": "order",
            "id": event.client_order_id.value,
            "event": type(event).__name__,
            "event_id": event.id.value,
            "n": order.event_count if order is not None else None,
        })

    def on_position_event(self, event: PositionEvent) -> None:
        if self._ledger_fd is None:
            return
        position = self.cache.position(event.position_id)
        self._append({
            "kind": "position",
            "id": event.position_id.value,
            "event": type(event).__name__,
            "n": position.event_count if position is not None else None,
        })

    def _append(self, record: dict) -> None:
        os.write(self._ledger_fd, (json.dumps(record) + "\n").encode())
        os.fsync(self._ledger_fd)

    def on_stop(self) -> None:
        self.clock.cancel_timers()
        self.cancel_all_orders(self.config.instrument_id)

    def on_dispose(self) -> None:
        if self._ledger_fd is not None:
            os.close(self._ledger_fd)
            self._ledger_fd = None
