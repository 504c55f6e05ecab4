"""
Flood strategy for the node-level benchmark (``python -m launcher.bench`` section ``node``):
submits market orders as fast as the node takes them, alternating buy and sell of the same
size, so on a NETTING venue each order opens or closes a position and order, position and
account events all flow through the cache (and its database) like a busy trading day.

It keeps up to ``orders_in_flight`` orders between submission and a terminal event and tops up
whenever one fills (or is denied, rejected, cancelled), so the rate is set by the node, not by
a timer. Orders go out in lists of ``orders_per_list`` (one ``SubmitOrderList`` each): the
node's risk engine throttles submissions per command (NautilusTrader's default
MAX_ORDER_SUBMIT_RATE is 100/s, which single orders would hit long before the node's capacity),
and the flood keeps its lists under ``submits_per_s`` so that nothing is denied.

It counts every order, position and account event it receives and, when stopped, logs one
line ``FLOOD result: {...}`` and (with ``result_path``) writes the same JSON there: events per
second over the window from the first submission to the stop.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from datetime import timedelta
from decimal import Decimal

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.events import AccountState
from nautilus_trader.model.events import OrderDenied
from nautilus_trader.model.events import OrderEvent
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.events import PositionEvent
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy


class FloodConfig(StrategyConfig, frozen=True):
    """
    Parameters
    ----------
    instrument_id : InstrumentId
        The instrument to trade (the launcher fills in the venue's first instrument).
    trade_size : Decimal
        Quantity of each market order, units of the base currency.
    orders_in_flight : int
        Orders submitted and not yet terminal at most (the flood's pipeline depth).
    orders_per_list : int
        Market orders per submitted order list.
    submits_per_s : int
        Order lists submitted per second at most; keep it below the risk engine's
        MAX_ORDER_SUBMIT_RATE (100/s by default) or orders are denied.
    max_orders : int, optional
        Submit no more than this many orders (0: submit none, only count; None: no limit).
    result_path : str, optional
        Where to write the result JSON when the strategy stops.
    """

    instrument_id: InstrumentId
    trade_size: Decimal = Decimal("10000")
    orders_in_flight: int = 40
    orders_per_list: int = 20
    submits_per_s: int = 80
    max_orders: int | None = None
    result_path: str | None = None

    def __post_init__(self) -> None:
        if self.trade_size <= 0:
            raise ValueError(f"trade_size must be positive, was {self.trade_size}")
        if not 1 <= self.orders_per_list <= self.orders_in_flight:
            raise ValueError(f"orders_per_list must be between 1 and orders_in_flight ({self.orders_in_flight}), "
                             f"was {self.orders_per_list}")
        if self.submits_per_s < 1:
            raise ValueError(f"submits_per_s must be at least 1, was {self.submits_per_s}")
        if self.max_orders is not None and self.max_orders < 0:
            raise ValueError(f"max_orders must be zero or positive, was {self.max_orders}")


class FloodStrategy(Strategy):
    # How often a flood held back by submits_per_s looks again (seconds).
    _RESUME_INTERVAL_S = 0.005

    def __init__(self, config: FloodConfig) -> None:
        super().__init__(config)
        self._instrument = None
        self._in_flight = 0
        self._submitted = 0
        self._filled = 0
        self._denied = 0
        self._counts = {"order": 0, "position": 0, "account": 0}
        self._per_second: list[int] = []  # events in each whole second since the first submission
        # time.monotonic() of the lists submitted in the last second, of the first submission and of the stop.
        self._recent_lists: deque[float] = deque()
        self._t_first: float | None = None
        self._t_stop: float | None = None

    def on_start(self) -> None:
        self._instrument = self.cache.instrument(self.config.instrument_id)
        if self._instrument is None:
            self.log.error(f"No instrument {self.config.instrument_id} in the cache; stopping")
            self.stop()
            return
        # Account states go to the portfolio, not to strategies: listen on the bus directly.
        self.msgbus.subscribe(topic="events.account.*", handler=self._on_account_state)
        self.subscribe_quote_ticks(self.config.instrument_id)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        # Market orders need a price to fill at: the flood starts with the first quote.
        if self._t_first is None and self.config.max_orders != 0:
            self._t_first = time.monotonic()
            self.clock.set_timer("flood-resume", timedelta(seconds=self._RESUME_INTERVAL_S), callback=self._on_resume)
            self._top_up()

    def _on_resume(self, event) -> None:
        self._top_up()

    def _top_up(self) -> None:
        cfg = self.config
        now = time.monotonic()
        recent = self._recent_lists
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        while self._t_stop is None and len(recent) < cfg.submits_per_s:
            size = cfg.orders_per_list
            if cfg.max_orders is not None:
                size = min(size, cfg.max_orders - self._submitted)  # the last list may be shorter
            if size <= 0 or cfg.orders_in_flight - self._in_flight < size:
                return
            orders = []
            for _ in range(size):
                side = OrderSide.BUY if self._submitted % 2 == 0 else OrderSide.SELL
                orders.append(self.order_factory.market(
                    instrument_id=cfg.instrument_id,
                    order_side=side,
                    quantity=self._instrument.make_qty(cfg.trade_size),
                ))
                self._submitted += 1
            self._in_flight += len(orders)
            recent.append(now)
            self.submit_order_list(self.order_factory.create_list(orders))

    def _count(self, kind: str) -> None:
        self._counts[kind] += 1
        if self._t_first is not None:
            second = int(time.monotonic() - self._t_first)
            while len(self._per_second) <= second:
                self._per_second.append(0)
            self._per_second[second] += 1

    def on_order_event(self, event: OrderEvent) -> None:
        self._count("order")
        if isinstance(event, OrderFilled):
            self._filled += 1
        elif isinstance(event, OrderDenied):
            self._denied += 1
        order = self.cache.order(event.client_order_id)
        if order is not None and order.is_closed:
            self._in_flight -= 1
            self._top_up()

    def on_position_event(self, event: PositionEvent) -> None:
        self._count("position")

    def _on_account_state(self, event: AccountState) -> None:
        self._count("account")

    def result(self) -> dict:
        """What the flood did; rates are per second of wall-clock time from the first order to the stop."""
        end = self._t_stop if self._t_stop is not None else time.monotonic()
        elapsed = end - self._t_first if self._t_first is not None else 0.0
        events = sum(self._counts.values())
        return {
            "orders_submitted": self._submitted,
            "orders_filled": self._filled,
            "orders_denied": self._denied,
            "events": dict(self._counts, total=events),
            "elapsed_s": round(elapsed, 3),
            "events_per_s": round(events / elapsed, 1) if elapsed > 0 else 0.0,
            # time.monotonic() (system-wide) of the first order and the stop: the bench keeps the latencies
            # measured inside this window, in this process and in its own.
            "window_monotonic_s": [self._t_first, end] if self._t_first is not None else None,
            "orders_per_s": round(self._filled / elapsed, 1) if elapsed > 0 else 0.0,
            # The last entry is a part second (cut by the stop); the rate can fall as trades accumulate.
            "events_per_second": list(self._per_second),
            # What the node's cache holds at the stop (a restart's recovered state included).
            "cache": {"orders": self.cache.orders_total_count(), "orders_closed": self.cache.orders_closed_count(),
                      "positions": self.cache.positions_total_count()},
        }

    def on_stop(self) -> None:
        self._t_stop = time.monotonic()
        self.clock.cancel_timers()
        self.msgbus.unsubscribe(topic="events.account.*", handler=self._on_account_state)
        result = self.result()
        self.log.info(f"FLOOD result: {json.dumps(result)}")
        if self.config.result_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.config.result_path)), exist_ok=True)
            tmp = f"{self.config.result_path}.tmp"
            with open(tmp, "w") as f:
                json.dump(result, f)
            os.replace(tmp, self.config.result_path)  # a reader never sees half a file
