"""
Fast, exact decoding of the payloads NautilusTrader's ``MsgSpecSerializer`` writes.

Loading state is dominated by deserialization: the serializer runs two regular expressions
per top-level key, parses every event id with Python's ``uuid`` module and builds every
identifier afresh. `EventDecoder` produces the same objects faster:

* one ``msgspec`` decode per payload (the serializer's own decode function);
* the serializer's timestamp rule, evaluated with a per-key memo instead of regexes
  (``k in "expire_time_ns"`` - a substring test, exactly as the serializer does it - or
  ``k.startswith("ts_")``); digit strings convert with ``int``; ISO 8601 strings of the exact
  shape the serializer writes are converted arithmetically (memoised), anything else goes
  through the serializer's own pandas path;
* per-type builders for the order events, ``OrderFilled`` and ``AccountState`` that mirror
  their ``from_dict_c`` one for one but reuse identifiers/prices/quantities already built
  in this load and construct event ids from canonical lowercase UUID v4 strings directly
  (the same Rust parse ``UUID4.from_str`` ends with, minus its Python ``uuid`` validation,
  which such strings always pass);
* every other type, and any payload that does not fit a fast path (a timestamp that is
  neither digits nor canonical ISO, a non-canonical UUID, a missing key), is handed to
  ``serializer.deserialize`` unchanged, so the result is always what the serializer gives.

tests/test_cache_compat.py checks that objects decoded here re-serialize to the stored bytes
for every event type, for both encodings and both timestamp formats.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from typing import Any

import msgspec
import pandas as pd
import pytz

from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.enums import TriggerType
from nautilus_trader.model.enums import account_type_from_str
from nautilus_trader.model.enums import contingency_type_from_str
from nautilus_trader.model.enums import liquidity_side_from_str
from nautilus_trader.model.enums import order_side_from_str
from nautilus_trader.model.enums import order_type_from_str
from nautilus_trader.model.enums import time_in_force_from_str
from nautilus_trader.model.enums import trigger_type_from_str
from nautilus_trader.model.events import AccountState
from nautilus_trader.model.events import OrderAccepted
from nautilus_trader.model.events import OrderCanceled
from nautilus_trader.model.events import OrderCancelRejected
from nautilus_trader.model.events import OrderDenied
from nautilus_trader.model.events import OrderEmulated
from nautilus_trader.model.events import OrderExpired
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.events import OrderInitialized
from nautilus_trader.model.events import OrderModifyRejected
from nautilus_trader.model.events import OrderPendingCancel
from nautilus_trader.model.events import OrderPendingUpdate
from nautilus_trader.model.events import OrderRejected
from nautilus_trader.model.events import OrderReleased
from nautilus_trader.model.events import OrderSubmitted
from nautilus_trader.model.events import OrderTriggered
from nautilus_trader.model.events import OrderUpdated
from nautilus_trader.model.identifiers import AccountId
from nautilus_trader.model.identifiers import ClientOrderId
from nautilus_trader.model.identifiers import ExecAlgorithmId
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.identifiers import OrderListId
from nautilus_trader.model.identifiers import PositionId
from nautilus_trader.model.identifiers import StrategyId
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.identifiers import TraderId
from nautilus_trader.model.identifiers import VenueOrderId
from nautilus_trader.model.objects import AccountBalance
from nautilus_trader.model.objects import Currency
from nautilus_trader.model.objects import MarginBalance
from nautilus_trader.model.objects import Money
from nautilus_trader.model.objects import Price
from nautilus_trader.model.objects import Quantity


_UUID4_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# The shape MsgSpecSerializer writes: pandas isoformat() with "+00:00" replaced by "Z".
_ISO_UTC = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z")
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
# pandas Timestamp bounds (ns since epoch) - outside them the serializer's path decides.
_TS_MIN = -9_223_372_036_854_775_807
_TS_MAX = 9_223_372_036_854_775_807


class _Fallback(Exception):
    """This payload must take the serializer's own path."""


def detect_encoding(serializer: Any) -> str:
    """Return "json" or "msgpack": the format `serializer` writes."""
    probe = serializer.serialize({"probe": 1})
    return "json" if probe[:1] == b"{" else "msgpack"


class EventDecoder:
    """
    Decodes serialized NautilusTrader objects exactly like `serializer.deserialize`.

    One instance per load: its memo tables (identifiers, prices, timestamps) live as long as
    the instance.
    """

    def __init__(self, serializer: Any, encoding: str | None = None) -> None:
        self._serializer = serializer
        self.encoding = encoding or detect_encoding(serializer)
        self._decode = msgspec.json.decode if self.encoding == "json" else msgspec.msgpack.decode
        self._convert_ts = bool(serializer.timestamps_as_str or serializer.timestamps_as_iso8601)
        self._ts_keys: dict[str, bool] = {}
        self._iso_cache: dict[str, int] = {}
        self._memo: dict[tuple[Any, str], Any] = {}
        self._builders: dict[str, Callable[[dict], Any]] = {
            "OrderInitialized": self._order_initialized,
            "OrderDenied": self._order_denied,
            "OrderEmulated": self._order_emulated,
            "OrderReleased": self._order_released,
            "OrderSubmitted": self._order_submitted,
            "OrderAccepted": self._order_accepted,
            "OrderRejected": self._order_rejected,
            "OrderCanceled": self._venue_event(OrderCanceled),
            "OrderExpired": self._venue_event(OrderExpired),
            "OrderTriggered": self._venue_event(OrderTriggered),
            "OrderPendingUpdate": self._venue_event(OrderPendingUpdate),
            "OrderPendingCancel": self._venue_event(OrderPendingCancel),
            "OrderModifyRejected": self._venue_event(OrderModifyRejected, with_reason=True),
            "OrderCancelRejected": self._venue_event(OrderCancelRejected, with_reason=True),
            "OrderUpdated": self._order_updated,
            "OrderFilled": self._order_filled,
            "AccountState": self._account_state,
        }
        self.fallbacks = 0  # payloads that took the serializer's path

    # -- public -----------------------------------------------------------------------------

    def decode(self, raw: bytes) -> Any:
        """The object `serializer.deserialize(raw)` returns (an equal one)."""
        try:
            values = self._decode(raw)
            if type(values) is not dict:
                raise _Fallback
            if self._convert_ts:
                self._timestamps(values)
            builder = self._builders.get(values.get("type"))
            if builder is None:
                raise _Fallback
            return builder(values)
        except (_Fallback, KeyError, TypeError, ValueError, msgspec.DecodeError):
            self.fallbacks += 1
            return self._serializer.deserialize(raw)

    # -- decoding helpers ---------------------------------------------------------------------

    def _timestamps(self, values: dict) -> None:
        ts_keys = self._ts_keys
        for key, value in values.items():
            is_ts = ts_keys.get(key)
            if is_ts is None:
                is_ts = ts_keys[key] = (key in "expire_time_ns") or key.startswith("ts_")
            if not is_ts or value is None:
                continue
            if type(value) is not str:
                raise _Fallback  # the serializer raises (or not) on its own terms
            if value.isdigit() and value.isascii():
                values[key] = int(value)
            else:
                values[key] = self._iso_to_ns(value)

    def _iso_to_ns(self, value: str) -> int:
        cached = self._iso_cache.get(value)
        if cached is not None:
            return cached
        m = _ISO_UTC.fullmatch(value)
        if m is None:
            raise _Fallback
        year, month, day, hour, minute, second, frac = m.groups()
        h, mi, s = int(hour), int(minute), int(second)
        if h > 23 or mi > 59 or s > 59:
            raise _Fallback
        try:
            days = _dt.date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
        except ValueError:
            raise _Fallback from None
        ns = ((days * 86400 + h * 3600 + mi * 60 + s) * 1_000_000_000) + (int(frac.ljust(9, "0")) if frac else 0)
        if not (_TS_MIN <= ns <= _TS_MAX) or ns < 0:
            raise _Fallback  # serializer territory (pandas bounds, uint64 timestamps)
        if len(self._iso_cache) < 1_000_000:
            self._iso_cache[value] = ns
        return ns

    def _m(self, factory: Callable[[str], Any], text: str) -> Any:
        """Memoised immutable value built by `factory(text)`."""
        key = (factory, text)
        obj = self._memo.get(key)
        if obj is None:
            obj = self._memo[key] = factory(text)
        return obj

    @staticmethod
    def _uuid(text: str) -> UUID4:
        if type(text) is str and _UUID4_CANONICAL.fullmatch(text):
            uuid = UUID4.__new__(UUID4)
            uuid.__setstate__(text)
            return uuid
        return UUID4.from_str(text)

    # -- builders (mirror each type's from_dict_c) --------------------------------------------

    def _common(self, v: dict) -> dict:
        m = self._m
        return dict(
            trader_id=m(TraderId, v["trader_id"]),
            strategy_id=m(StrategyId, v["strategy_id"]),
            instrument_id=m(InstrumentId.from_str, v["instrument_id"]),
            client_order_id=m(ClientOrderId, v["client_order_id"]),
        )

    def _order_initialized(self, v: dict) -> OrderInitialized:
        m = self._m
        trigger_instrument_id = v["trigger_instrument_id"]
        order_list_id = v["order_list_id"]
        parent_order_id = v["parent_order_id"]
        exec_algorithm_id = v["exec_algorithm_id"]
        exec_spawn_id = v["exec_spawn_id"]
        linked_order_ids = v.get("linked_order_ids")
        tags = v.get("tags")
        if isinstance(linked_order_ids, str):
            linked_order_ids = linked_order_ids.split(",")
        if isinstance(tags, str):
            tags = tags.split(",")
        emulation_trigger = v["emulation_trigger"]
        return OrderInitialized(
            **self._common(v),
            order_side=order_side_from_str(v["order_side"]),
            order_type=order_type_from_str(v["order_type"]),
            quantity=m(Quantity.from_str, v["quantity"]),
            time_in_force=time_in_force_from_str(v["time_in_force"]),
            post_only=v["post_only"],
            reduce_only=v["reduce_only"],
            quote_quantity=v["quote_quantity"],
            options=v["options"],
            emulation_trigger=trigger_type_from_str(emulation_trigger) if emulation_trigger is not None else TriggerType.NO_TRIGGER,
            trigger_instrument_id=m(InstrumentId.from_str, trigger_instrument_id) if trigger_instrument_id is not None else None,
            contingency_type=contingency_type_from_str(v["contingency_type"]),
            order_list_id=OrderListId(order_list_id) if order_list_id is not None else None,
            linked_order_ids=[ClientOrderId(o) for o in linked_order_ids] if linked_order_ids is not None else None,
            parent_order_id=ClientOrderId(parent_order_id) if parent_order_id is not None else None,
            exec_algorithm_id=m(ExecAlgorithmId, exec_algorithm_id) if exec_algorithm_id is not None else None,
            exec_algorithm_params=v["exec_algorithm_params"],
            exec_spawn_id=ClientOrderId(exec_spawn_id) if exec_spawn_id is not None else None,
            tags=tags,
            event_id=self._uuid(v["event_id"]),
            ts_init=v["ts_init"],
            reconciliation=v.get("reconciliation", False),
        )

    def _order_denied(self, v: dict) -> OrderDenied:
        return OrderDenied(
            **self._common(v),
            reason=v["reason"],
            event_id=self._uuid(v["event_id"]),
            ts_init=v["ts_init"],
        )

    def _order_emulated(self, v: dict) -> OrderEmulated:
        return OrderEmulated(**self._common(v), event_id=self._uuid(v["event_id"]), ts_init=v["ts_init"])

    def _order_released(self, v: dict) -> OrderReleased:
        return OrderReleased(
            **self._common(v),
            released_price=self._m(Price.from_str, v["released_price"]),
            event_id=self._uuid(v["event_id"]),
            ts_init=v["ts_init"],
        )

    def _order_submitted(self, v: dict) -> OrderSubmitted:
        return OrderSubmitted(
            **self._common(v),
            account_id=self._m(AccountId, v["account_id"]),
            event_id=self._uuid(v["event_id"]),
            ts_event=v["ts_event"],
            ts_init=v["ts_init"],
        )

    def _order_accepted(self, v: dict) -> OrderAccepted:
        return OrderAccepted(
            **self._common(v),
            venue_order_id=VenueOrderId(v["venue_order_id"]),
            account_id=self._m(AccountId, v["account_id"]),
            event_id=self._uuid(v["event_id"]),
            ts_event=v["ts_event"],
            ts_init=v["ts_init"],
            reconciliation=v.get("reconciliation", False),
        )

    def _order_rejected(self, v: dict) -> OrderRejected:
        return OrderRejected(
            **self._common(v),
            account_id=self._m(AccountId, v["account_id"]),
            reason=v["reason"],
            event_id=self._uuid(v["event_id"]),
            ts_event=v["ts_event"],
            ts_init=v["ts_init"],
            reconciliation=v.get("reconciliation", False),
            due_post_only=v.get("due_post_only", False),
        )

    def _venue_event(self, cls: type, with_reason: bool = False) -> Callable[[dict], Any]:
        """Builder for the events with optional venue_order_id/account_id (+ reason)."""

        def build(v: dict) -> Any:
            venue_order_id = v.get("venue_order_id")
            account_id = v.get("account_id")
            kwargs = self._common(v)
            kwargs["venue_order_id"] = VenueOrderId(venue_order_id) if venue_order_id is not None else None
            kwargs["account_id"] = self._m(AccountId, account_id) if account_id is not None else None
            if with_reason:
                kwargs["reason"] = v["reason"]
            return cls(
                **kwargs,
                event_id=self._uuid(v["event_id"]),
                ts_event=v["ts_event"],
                ts_init=v["ts_init"],
                reconciliation=v.get("reconciliation", False),
            )

        return build

    def _order_updated(self, v: dict) -> OrderUpdated:
        m = self._m
        venue_order_id = v.get("venue_order_id")
        account_id = v.get("account_id")
        price = v.get("price")
        trigger_price = v.get("trigger_price")
        return OrderUpdated(
            **self._common(v),
            venue_order_id=VenueOrderId(venue_order_id) if venue_order_id is not None else None,
            account_id=m(AccountId, account_id) if account_id is not None else None,
            quantity=m(Quantity.from_str, v["quantity"]),
            price=m(Price.from_str, price) if price is not None else None,
            trigger_price=m(Price.from_str, trigger_price) if trigger_price is not None else None,
            event_id=self._uuid(v["event_id"]),
            ts_event=v["ts_event"],
            ts_init=v["ts_init"],
            reconciliation=v.get("reconciliation", False),
            is_quote_quantity=v.get("is_quote_quantity", False),
        )

    def _order_filled(self, v: dict) -> OrderFilled:
        m = self._m
        position_id = v.get("position_id")
        return OrderFilled(
            **self._common(v),
            venue_order_id=VenueOrderId(v["venue_order_id"]),
            account_id=m(AccountId, v["account_id"]),
            trade_id=TradeId(v["trade_id"]),
            position_id=m(PositionId, position_id) if position_id is not None else None,
            order_side=order_side_from_str(v["order_side"]),
            order_type=order_type_from_str(v["order_type"]),
            last_qty=m(Quantity.from_str, v["last_qty"]),
            last_px=m(Price.from_str, v["last_px"]),
            currency=m(Currency.from_str, v["currency"]),
            commission=m(Money.from_str, v["commission"]),
            liquidity_side=liquidity_side_from_str(v["liquidity_side"]),
            event_id=self._uuid(v["event_id"]),
            ts_event=v["ts_event"],
            ts_init=v["ts_init"],
            info=v["info"],
            reconciliation=v.get("reconciliation", False),
        )

    def _account_state(self, v: dict) -> AccountState:
        m = self._m
        base = v["base_currency"]
        return AccountState(
            account_id=m(AccountId, v["account_id"]),
            account_type=account_type_from_str(v["account_type"]),
            base_currency=m(Currency.from_str, base) if base is not None else None,
            reported=v["reported"],
            balances=[AccountBalance.from_dict(b) for b in v["balances"]],
            margins=[MarginBalance.from_dict(mb) for mb in v["margins"]],
            info=v["info"],
            event_id=self._uuid(v["event_id"]),
            ts_event=v["ts_event"],
            ts_init=v["ts_init"],
        )


def iso_to_ns_reference(value: str) -> int:
    """The serializer's own conversion (for tests and the fallback path)."""
    return pd.Timestamp(value, tz=pytz.utc).value
