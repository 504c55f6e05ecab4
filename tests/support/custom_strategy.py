"""A strategy living outside the launcher's package, as a strategy author's would."""

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy


class MyConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    fast: int = 5


class MyStrategy(Strategy):
    def __init__(self, config: MyConfig) -> None:
        super().__init__(config)

    def on_start(self) -> None:
        self.log.info(f"MyStrategy started with fast={self.config.fast}")


class BrokenStrategy(Strategy):
    """Fails while the node is built: an unexpected error inside the launcher's job."""

    def __init__(self, config: MyConfig) -> None:
        raise RuntimeError("broken on purpose")
