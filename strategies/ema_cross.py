"""
Classic EMA cross on quote mid prices: long when the fast EMA crosses above the slow one,
short when it crosses below (NETTING: a market order of twice the size flips the position).
"""

from __future__ import annotations

from decimal import Decimal

from nautilus_trader.config import StrategyConfig
from nautilus_trader.indicators import ExponentialMovingAverage
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.enums import PriceType
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy


class EMACrossConfig(StrategyConfig, frozen=True):
    """
    Parameters
    ----------
    instrument_id : InstrumentId
        The instrument to trade (the launcher fills in the venue's first instrument).
    fast_ema_period : int
        Fast EMA period, in quotes.
    slow_ema_period : int
        Slow EMA period, in quotes.
    trade_size : Decimal
        Order quantity, in units of the base currency.
    """

    instrument_id: InstrumentId
    fast_ema_period: int = 10
    slow_ema_period: int = 30
    trade_size: Decimal = Decimal("100000")

    def __post_init__(self) -> None:
        if not 0 < self.fast_ema_period < self.slow_ema_period:
            raise ValueError(
                f"fast_ema_period ({self.fast_ema_period}) must be positive and below "
                f"slow_ema_period ({self.slow_ema_period})",
            )
        if self.trade_size <= 0:
            raise ValueError(f"trade_size must be positive, was {self.trade_size}")


class EMACross(Strategy):
    def __init__(self, config: EMACrossConfig) -> None:
        super().__init__(config)
        self.fast_ema = ExponentialMovingAverage(config.fast_ema_period, PriceType.MID)
        self.slow_ema = ExponentialMovingAverage(config.slow_ema_period, PriceType.MID)
        self._instrument = None
        self._last_sign = 0

    def on_start(self) -> None:
        self._instrument = self.cache.instrument(self.config.instrument_id)
        if self._instrument is None:
            self.log.error(f"No instrument {self.config.instrument_id} in the cache; stopping")
            self.stop()
            return
        self.subscribe_quote_ticks(self.config.instrument_id)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        self.fast_ema.handle_quote_tick(tick)
        self.slow_ema.handle_quote_tick(tick)
        if not self.slow_ema.initialized:
            return
        sign = 1 if self.fast_ema.value > self.slow_ema.value else -1
        if sign == self._last_sign:
            return
        self._last_sign = sign
        self._target(OrderSide.BUY if sign > 0 else OrderSide.SELL)

    def _target(self, side: OrderSide) -> None:
        size = self.config.trade_size
        net = self.portfolio.net_position(self.config.instrument_id)
        if side == OrderSide.BUY:
            quantity = size - net
        else:
            quantity = size + net
        if quantity <= 0:
            return
        order = self.order_factory.market(
            instrument_id=self.config.instrument_id,
            order_side=side,
            quantity=self._instrument.make_qty(quantity),
        )
        self.submit_order(order)

    def on_stop(self) -> None:
        self.cancel_all_orders(self.config.instrument_id)
