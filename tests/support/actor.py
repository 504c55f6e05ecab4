"""An actor living outside the launcher's package, as an actor author's would."""

from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.identifiers import InstrumentId


class PingConfig(ActorConfig, frozen=True):
    instrument_id: InstrumentId
    label: str = "ping"


class PingActor(Actor):
    def on_start(self) -> None:
        self.log.info(f"PingActor {self.config.label} started on {self.config.instrument_id}")
