"""
The offline ``sim`` venue: a seeded synthetic market-data client and NautilusTrader's
sandbox execution client, so a node trades with no exchange account and no network.

Quotes follow a seeded Gaussian random walk of the mid price; the sandbox's simulated
matching engine fills orders against them. That engine lives in process memory only:
after a restart it holds none of the orders the cache recovered, so the execution client
cancels every such order at connect with a log line naming it, rather than leaving
zombies that can neither fill nor cancel.

The sandbox opens the venue's account (``{venue}-001``) with the configured type and base
currency. An account of that id recovered from the cache keeps its own: NautilusTrader then
fails deep inside the node build with a traceback, so a mismatch is reported first, as a
configuration error naming the key to change.
"""

from __future__ import annotations

import asyncio
import random

import msgspec
from nautilus_trader.adapters.sandbox.config import SandboxExecutionClientConfig
from nautilus_trader.adapters.sandbox.execution import SandboxExecutionClient
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock
from nautilus_trader.common.component import MessageBus
from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.config import LiveDataClientConfig
from nautilus_trader.live.data_client import LiveMarketDataClient
from nautilus_trader.live.factories import LiveDataClientFactory
from nautilus_trader.live.factories import LiveExecClientFactory
from nautilus_trader.model.currencies import Currency
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.model.enums import account_type_from_str
from nautilus_trader.model.enums import account_type_to_str
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import ClientId
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.model.objects import Price
from nautilus_trader.model.objects import Quantity
from nautilus_trader.portfolio import PortfolioFacade
from nautilus_trader.test_kit.providers import TestInstrumentProvider


class SimDataClientConfig(LiveDataClientConfig, frozen=True, kw_only=True):
    """
    Synthetic market data for the sim venue.

    Parameters
    ----------
    venue : str
        The venue name (quotes are for ``{symbol}.{venue}``).
    instruments : list[str]
        FX pairs such as ``EUR/USD``.
    quote_rate_hz : float
        Quotes per second per instrument.
    trades : bool
        Also publish one synthetic trade tick per quote.
    seed : int
        Seed of the random walk (same seed, same prices).
    initial_price : float
        Starting mid price.
    volatility_bp : float
        Standard deviation of one random-walk step, basis points of the price.
    spread_bp : float
        Bid/ask spread, basis points of the price.
    """

    venue: str = "SIM"
    instruments: list[str] = msgspec.field(default_factory=lambda: ["EUR/USD"])
    quote_rate_hz: float = 20.0
    trades: bool = False
    seed: int = 42
    initial_price: float = 1.10
    volatility_bp: float = 0.5
    spread_bp: float = 0.5


def sim_instruments(venue: str, symbols: list[str]) -> list[CurrencyPair]:
    """NautilusTrader's standard FX pair definitions, listed on `venue`."""
    return [TestInstrumentProvider.default_fx_ccy(symbol, venue=Venue(venue)) for symbol in symbols]


class SimDataClient(LiveMarketDataClient):
    """Publishes seeded synthetic quotes (and optionally trades) while connected."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
        config: SimDataClientConfig,
        name: str | None = None,
    ) -> None:
        super().__init__(
            loop=loop,
            client_id=ClientId(name or config.venue),
            venue=Venue(config.venue),
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            instrument_provider=InstrumentProvider(),
            config=config,
        )
        self._sim_config = config
        self._instruments = sim_instruments(config.venue, list(config.instruments))
        self._rng = random.Random(config.seed)  # noqa: S311 (market simulation, not security)
        self._mids = {inst.id: float(config.initial_price) for inst in self._instruments}
        self._trade_seq = 0
        self._stream_task: asyncio.Task | None = None
        # The sandbox execution client loads the venue's instruments from the cache when it
        # connects, so they must be there before any client connects.
        for instrument in self._instruments:
            cache.add_instrument(instrument)

    async def _connect(self) -> None:
        for instrument in self._instruments:
            self._handle_data(instrument)
        self._stream_task = self.create_task(self._stream_quotes(), log_msg="sim quote stream")
        self._log.info(
            f"Streaming synthetic quotes for {[str(i.id) for i in self._instruments]} "
            f"at {self._sim_config.quote_rate_hz} Hz (seed {self._sim_config.seed})",
        )

    async def _disconnect(self) -> None:
        if self._stream_task is not None:
            self._stream_task.cancel()
            self._stream_task = None

    async def _subscribe_quote_ticks(self, command) -> None:
        """Quotes stream for every instrument of the venue; nothing to do per subscription."""

    async def _subscribe_trade_ticks(self, command) -> None:
        """Trades stream when ``trades`` is on; nothing to do per subscription."""

    async def _subscribe_instrument(self, command) -> None:
        """Instruments are published at connect."""

    async def _unsubscribe_quote_ticks(self, command) -> None:
        """See _subscribe_quote_ticks."""

    async def _unsubscribe_trade_ticks(self, command) -> None:
        """See _subscribe_trade_ticks."""

    async def _stream_quotes(self) -> None:
        interval_s = 1.0 / max(self._sim_config.quote_rate_hz, 1e-6)
        while True:
            for instrument in self._instruments:
                self._publish_step(instrument)
            await asyncio.sleep(interval_s)

    def _publish_step(self, instrument: CurrencyPair) -> None:
        cfg = self._sim_config
        mid = self._mids[instrument.id]
        mid *= 1.0 + self._rng.gauss(0.0, cfg.volatility_bp * 1e-4)
        self._mids[instrument.id] = mid
        half_spread = max(mid * cfg.spread_bp * 1e-4 / 2, float(instrument.price_increment))
        now = self._clock.timestamp_ns()
        bid = instrument.make_price(mid - half_spread)
        ask = instrument.make_price(mid + half_spread)
        if ask <= bid:
            ask = Price(float(bid) + float(instrument.price_increment), instrument.price_precision)
        size = Quantity.from_int(1_000_000)
        self._handle_data(QuoteTick(instrument.id, bid, ask, size, size, now, now))
        if cfg.trades:
            self._trade_seq += 1
            side = AggressorSide.BUYER if self._rng.random() < 0.5 else AggressorSide.SELLER
            price = ask if side == AggressorSide.BUYER else bid
            self._handle_data(
                TradeTick(
                    instrument.id, price, Quantity.from_int(100_000), side,
                    TradeId(f"SIM-{self._trade_seq}"), now, now,
                ),
            )


class SimExecutionClient(SandboxExecutionClient):
    """NautilusTrader's sandbox execution client, plus handling of orders recovered from the cache."""

    def __init__(self, *args, config: SandboxExecutionClientConfig, cache: Cache, **kwargs) -> None:
        _check_recovered_account(cache, config)
        super().__init__(*args, config=config, cache=cache, **kwargs)

    def connect(self) -> None:
        super().connect()
        self._cancel_restored_orders()

    def _cancel_restored_orders(self) -> None:
        orders = {o.client_order_id: o for o in self._cache.orders_open(venue=self.venue)}
        orders.update({o.client_order_id: o for o in self._cache.orders_inflight(venue=self.venue)})
        for order in orders.values():
            self._log.warning(
                f"Cancelling {order.client_order_id} ({order.status_string()}) recovered from the cache: "
                "the simulated matching engine starts empty after a restart and cannot work it",
            )
            self.generate_order_canceled(
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                client_order_id=order.client_order_id,
                venue_order_id=order.venue_order_id,
                ts_event=self._clock.timestamp_ns(),
            )


def _check_recovered_account(cache: Cache, config: SandboxExecutionClientConfig) -> None:
    """Raise ConfigError when the account recovered for this venue cannot be the configured one."""
    from launcher.errors import ConfigError  # noqa: PLC0415

    account = cache.account(AccountId(f"{config.venue}-001"))
    if account is None:
        return
    recovered = account_type_to_str(account.type)
    if account.type != account_type_from_str(config.account_type):
        raise ConfigError(
            "venue.account_type",
            f"is {config.account_type.upper()}, but account {account.id} recovered from Redis is {recovered} "
            f"(an account cannot change type): set venue.account_type={recovered}, or use another trader_id",
        )
    base = Currency.from_str(config.base_currency) if config.base_currency else None
    if account.base_currency != base:
        recovered_base = account.base_currency.code if account.base_currency else "null (multi-currency)"
        raise ConfigError(
            "venue.base_currency",
            f"is {config.base_currency}, but account {account.id} recovered from Redis has base currency "
            f"{recovered_base}: set venue.base_currency={account.base_currency.code if account.base_currency else 'null'}, "
            "or use another trader_id",
        )


class SimDataClientFactory(LiveDataClientFactory):
    @staticmethod
    def create(loop, name, config, msgbus, cache, clock) -> SimDataClient:  # type: ignore[override]
        return SimDataClient(loop=loop, msgbus=msgbus, cache=cache, clock=clock, config=config, name=name)


class SandboxLiveExecClientFactory(LiveExecClientFactory):
    """
    Creates the sim venue's execution client.

    The name is load-bearing: NautilusTrader's node builder hands the portfolio (which the
    simulated exchange needs) only to a factory class named ``SandboxLiveExecClientFactory``.
    """

    @staticmethod
    def create(loop, name, config, portfolio: PortfolioFacade, msgbus, cache, clock) -> SimExecutionClient:  # type: ignore[override]
        return SimExecutionClient(
            loop=loop, portfolio=portfolio, msgbus=msgbus, cache=cache, clock=clock, config=config,
        )


SimExecClientFactory = SandboxLiveExecClientFactory
