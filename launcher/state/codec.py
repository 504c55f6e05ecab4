"""
Fast, exact (de)serialization of the payloads NautilusTrader's ``MsgSpecSerializer`` writes.

Loading state is dominated by deserialization: the serializer runs two regular expressions
per top-level key, parses every event id with Python's ``uuid`` module, builds every
identifier afresh and passes everything by keyword. `EventDecoder` produces the same objects
faster:

* one ``msgspec`` decode per payload straight into a typed schema per event type (a tagged
  union on ``type``) holding exactly the keys ``to_dict_c`` writes - unknown keys, missing
  required keys or unexpected value types leave the fast path;
* the serializer's timestamp rule per ``ts_*`` value: digit strings convert with ``int``;
  ISO 8601 strings of the exact shape the serializer writes are converted arithmetically
  (per-second prefix and last value memoised); anything else leaves the fast path;
* per-type builders for every order event, ``OrderFilled`` and ``AccountState`` that mirror
  their ``from_dict_c`` one for one (positional arguments), reuse identifiers, prices,
  quantities and currencies already built in this load, and construct event ids from
  canonical lowercase UUID v4 strings directly (the same Rust parse ``UUID4.from_str`` ends
  with, minus its Python ``uuid`` validation, which such strings always pass);
* every other type, and any payload that leaves the fast path, is handed to
  ``serializer.deserialize`` unchanged, so the result is always what the serializer gives.

`EventEncoder` does the reverse for the write path (same ``to_dict``, same timestamp rule,
same ``msgspec`` call; memoised key rule and arithmetic ISO 8601 text in pandas' format).

tests/test_cache_compat.py checks that objects decoded here re-serialize to the stored bytes
for every event type, for both encodings and both timestamp formats, that the encoder's bytes
equal the serializer's, and that odd payloads take the serializer's path.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from typing import ClassVar
from typing import Union

import msgspec
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.enums import AccountType
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.model.enums import AssetClass
from nautilus_trader.model.enums import ContingencyType
from nautilus_trader.model.enums import CurrencyType
from nautilus_trader.model.enums import InstrumentClass
from nautilus_trader.model.enums import LiquiditySide
from nautilus_trader.model.enums import OmsType
from nautilus_trader.model.enums import OptionKind
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.enums import OrderType
from nautilus_trader.model.enums import PositionSide
from nautilus_trader.model.enums import TimeInForce
from nautilus_trader.model.enums import TrailingOffsetType
from nautilus_trader.model.enums import TriggerType
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
from nautilus_trader.model.orders import LimitOrder
from nautilus_trader.model.orders import MarketOrder
from nautilus_trader.model.orders.unpacker import OrderUnpacker


_UUID4_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# The shape MsgSpecSerializer writes: pandas isoformat() with "+00:00" replaced by "Z".
_ISO_SECOND = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})", re.ASCII)
# Fraction digits -> nanoseconds per unit of the digits as written.
_FRACTION_SCALE = {n: 10 ** (9 - n) for n in range(1, 10)}
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
# pandas Timestamp bounds (ns since epoch) - outside them the serializer's path decides.
_TS_MIN = -9_223_372_036_854_775_807
_TS_MAX = 9_223_372_036_854_775_807


class _Fallback(Exception):
    """This payload must take the serializer's own path."""


class CorruptPayload(Exception):
    """A stored payload NautilusTrader must not be handed (see `check_payload`)."""


# Enum names by the payload fields that hold them. NautilusTrader's `*_from_str` functions abort
# the whole process (a Rust panic across its C interface) on a name they do not know, so a
# damaged payload would end the launcher with a backtrace instead of a finding: names are looked
# up here (a KeyError sends the payload to the checked fallback), never passed to them unchecked.
_ENUM_FIELDS: dict[str, dict[str, Any]] = {field: dict(enum.__members__) for field, enum in (
    ("order_side", OrderSide), ("order_type", OrderType), ("time_in_force", TimeInForce),
    ("contingency_type", ContingencyType), ("emulation_trigger", TriggerType), ("trigger_type", TriggerType),
    ("trailing_offset_type", TrailingOffsetType), ("liquidity_side", LiquiditySide),
    ("account_type", AccountType), ("oms_type", OmsType), ("position_side", PositionSide),
    ("aggressor_side", AggressorSide), ("asset_class", AssetClass), ("instrument_class", InstrumentClass),
    ("currency_type", CurrencyType), ("option_kind", OptionKind),
)}
_SIDES, _ORDER_TYPES, _TIFS = _ENUM_FIELDS["order_side"], _ENUM_FIELDS["order_type"], _ENUM_FIELDS["time_in_force"]
_CONTINGENCIES, _TRIGGERS_BY_NAME = _ENUM_FIELDS["contingency_type"], _ENUM_FIELDS["trigger_type"]
_LIQUIDITY, _ACCOUNT_TYPES = _ENUM_FIELDS["liquidity_side"], _ENUM_FIELDS["account_type"]


def check_payload(raw: bytes) -> None:
    """
    Raise `CorruptPayload` when `raw` (msgpack or JSON) names, at its top level or in its
    ``options``, an enum value NautilusTrader does not know; call it before handing a stored
    payload to the serializer, which would abort the process on it. Anything else the
    serializer judges itself.
    """
    try:
        values = (msgspec.json.decode if raw[:1] == b"{" else msgspec.msgpack.decode)(raw)
    except (msgspec.DecodeError, ValueError, TypeError):
        return  # not a payload this check can read: the serializer raises (it does not abort)
    if not isinstance(values, dict):
        return
    for where in (values, values.get("options")):
        if not isinstance(where, dict):
            continue
        for field, names in _ENUM_FIELDS.items():
            value = where.get(field)
            if value is not None and (type(value) is not str or value not in names):
                raise CorruptPayload(f"field {field} holds {str(value)[:40]!r}, which NautilusTrader does not know")


def deserialize_checked(serializer: Any, raw: bytes) -> Any:
    """``serializer.deserialize(raw)`` once `check_payload` passed: a damaged enum is an exception, not an abort."""
    check_payload(raw)
    return serializer.deserialize(raw)


@dataclass(frozen=True)
class ClosedOrder:
    """A plainly closed order as its stored events say (`EventDecoder.closed_order`)."""

    status: str  # FILLED, CANCELED, EXPIRED, REJECTED or DENIED
    trade_ids: frozenset[str]  # of its fills
    ts_last: int  # its last event's ts_event (UNIX nanoseconds)


def detect_encoding(serializer: Any) -> str:
    """Return "json" or "msgpack": the format `serializer` writes."""
    probe = serializer.serialize({"probe": 1})
    return "json" if probe[:1] == b"{" else "msgpack"


# -- payload schemas ------------------------------------------------------------------------
#
# One msgspec Struct per fast-path type, with exactly the top-level keys ``to_dict_c`` writes
# (unknown keys are refused, so anything unexpected takes the serializer's path). Keys that
# ``from_dict_c`` reads with ``values[...]`` are required; keys it reads with ``.get`` have its
# defaults. Timestamps stay text here and go through the serializer's rule in `_ts`.

_Ts = str | int
_STRUCT = dict(tag_field="type", forbid_unknown_fields=True, gc=False)


class _OrderInitialized(msgspec.Struct, tag="OrderInitialized", **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    order_side: str
    order_type: str
    quantity: str
    time_in_force: str
    post_only: bool
    reduce_only: bool
    quote_quantity: bool
    options: dict
    emulation_trigger: str | None
    trigger_instrument_id: str | None
    contingency_type: str
    order_list_id: str | None
    parent_order_id: str | None
    exec_algorithm_id: str | None
    exec_algorithm_params: dict | None
    exec_spawn_id: str | None
    event_id: str
    ts_init: _Ts
    linked_order_ids: list[str] | str | None = None
    tags: list[str] | str | None = None
    ts_event: _Ts | None = None
    reconciliation: bool = False


class _OrderDenied(msgspec.Struct, tag="OrderDenied", **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    reason: str
    event_id: str
    ts_init: _Ts
    ts_event: _Ts | None = None


class _OrderEmulated(msgspec.Struct, tag="OrderEmulated", **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    event_id: str
    ts_init: _Ts
    ts_event: _Ts | None = None


class _OrderReleased(msgspec.Struct, tag="OrderReleased", **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    released_price: str
    event_id: str
    ts_init: _Ts
    ts_event: _Ts | None = None


class _OrderSubmitted(msgspec.Struct, tag="OrderSubmitted", **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    account_id: str
    event_id: str
    ts_event: _Ts
    ts_init: _Ts


class _OrderAccepted(msgspec.Struct, tag="OrderAccepted", **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    venue_order_id: str
    account_id: str
    event_id: str
    ts_event: _Ts
    ts_init: _Ts
    reconciliation: bool = False


class _OrderRejected(msgspec.Struct, tag="OrderRejected", **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    account_id: str
    reason: str
    event_id: str
    ts_event: _Ts
    ts_init: _Ts
    reconciliation: bool = False
    due_post_only: bool = False


class _VenueEvent(msgspec.Struct, **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    event_id: str
    ts_event: _Ts
    ts_init: _Ts
    venue_order_id: str | None = None
    account_id: str | None = None
    reconciliation: bool = False


class _OrderCanceled(_VenueEvent, tag="OrderCanceled"):
    pass


class _OrderExpired(_VenueEvent, tag="OrderExpired"):
    pass


class _OrderTriggered(_VenueEvent, tag="OrderTriggered"):
    pass


class _OrderPendingUpdate(_VenueEvent, tag="OrderPendingUpdate"):
    pass


class _OrderPendingCancel(_VenueEvent, tag="OrderPendingCancel"):
    pass


class _VenueRejection(msgspec.Struct, **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    reason: str
    event_id: str
    ts_event: _Ts
    ts_init: _Ts
    venue_order_id: str | None = None
    account_id: str | None = None
    reconciliation: bool = False


class _OrderModifyRejected(_VenueRejection, tag="OrderModifyRejected"):
    pass


class _OrderCancelRejected(_VenueRejection, tag="OrderCancelRejected"):
    pass


class _OrderUpdated(msgspec.Struct, tag="OrderUpdated", **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    quantity: str
    event_id: str
    ts_event: _Ts
    ts_init: _Ts
    venue_order_id: str | None = None
    account_id: str | None = None
    price: str | None = None
    trigger_price: str | None = None
    reconciliation: bool = False
    is_quote_quantity: bool = False


class _OrderFilled(msgspec.Struct, tag="OrderFilled", **_STRUCT):
    trader_id: str
    strategy_id: str
    instrument_id: str
    client_order_id: str
    venue_order_id: str
    account_id: str
    trade_id: str
    order_side: str
    order_type: str
    last_qty: str
    last_px: str
    currency: str
    commission: str
    liquidity_side: str
    event_id: str
    ts_event: _Ts
    ts_init: _Ts
    info: dict
    position_id: str | None = None
    reconciliation: bool = False


class _AccountState(msgspec.Struct, tag="AccountState", **_STRUCT):
    account_id: str
    account_type: str
    base_currency: str | None
    balances: list[dict]
    margins: list[dict]
    reported: bool
    info: dict
    event_id: str
    ts_event: _Ts
    ts_init: _Ts


_SCHEMAS = (
    _OrderInitialized, _OrderDenied, _OrderEmulated, _OrderReleased, _OrderSubmitted, _OrderAccepted,
    _OrderRejected, _OrderCanceled, _OrderExpired, _OrderTriggered, _OrderPendingUpdate, _OrderPendingCancel,
    _OrderModifyRejected, _OrderCancelRejected, _OrderUpdated, _OrderFilled, _AccountState,
)
_SCHEMA_UNION = Union[_SCHEMAS]  # noqa: UP007 (msgspec needs a typing.Union of the structs)
# Just the fields `EventDecoder.closed_order` reads, other keys skipped unread: a plainly
# closed order is recognised at a fraction of a full typed decode.
_LIGHT = dict(tag_field="type", gc=False)


class _LightEvent(msgspec.Struct, **_LIGHT):
    client_order_id: str
    event_id: str
    ts_init: _Ts
    ts_event: _Ts | None = None


class _LightInitialized(_LightEvent, tag="OrderInitialized"):
    quantity: str = ""
    contingency_type: str = ""
    emulation_trigger: str | None = None
    order_list_id: str | None = None
    parent_order_id: str | None = None
    linked_order_ids: list[str] | str | None = None
    exec_algorithm_id: str | None = None
    exec_spawn_id: str | None = None


class _LightFilled(_LightEvent, tag="OrderFilled"):
    trade_id: str = ""
    last_qty: str = ""


_LIGHT_TAGS = ("OrderDenied", "OrderEmulated", "OrderReleased", "OrderSubmitted", "OrderAccepted", "OrderRejected",
               "OrderCanceled", "OrderExpired", "OrderTriggered", "OrderPendingUpdate", "OrderPendingCancel",
               "OrderModifyRejected", "OrderCancelRejected", "OrderUpdated")
_LIGHT_OTHERS = {tag: type(f"_Light{tag[5:]}", (_LightEvent,), {}, tag=tag) for tag in _LIGHT_TAGS}
_LIGHT_UNION = Union[(_LightInitialized, _LightFilled, *_LIGHT_OTHERS.values())]
# The events after which an order is closed for good (a completing fill aside).
_TERMINAL = {_LIGHT_OTHERS["OrderCanceled"]: "CANCELED", _LIGHT_OTHERS["OrderExpired"]: "EXPIRED",
             _LIGHT_OTHERS["OrderRejected"]: "REJECTED", _LIGHT_OTHERS["OrderDenied"]: "DENIED"}
_LIGHT_UPDATED = _LIGHT_OTHERS["OrderUpdated"]


def _completes(fills: list[str], quantity: str) -> bool | None:
    """True: the fills add up to exactly `quantity`; False: to less; None: to more (overfilled)."""
    if len(fills) == 1 and fills[0] == quantity:
        return True  # the common case, without Decimal arithmetic
    total, whole = sum(map(Decimal, fills)), Decimal(quantity)
    return True if total == whole else False if total < whole else None


class EventDecoder:
    """
    Decodes serialized NautilusTrader objects exactly like `serializer.deserialize`.

    One instance per load: its memo tables (identifiers, prices, timestamps) live as long as
    the instance.
    """

    def __init__(self, serializer: Any, encoding: str | None = None) -> None:
        self._serializer = serializer
        self.encoding = encoding or detect_encoding(serializer)
        module = msgspec.json if self.encoding == "json" else msgspec.msgpack
        self._typed = module.Decoder(_SCHEMA_UNION).decode
        self._light = module.Decoder(_LIGHT_UNION).decode
        self._convert_ts = bool(serializer.timestamps_as_str or serializer.timestamps_as_iso8601)
        self._seconds: dict[str, int] = {}
        self._last_ts_text: str | None = None
        self._last_ts = 0
        self._heads: dict[tuple[str, str, str], tuple[TraderId, StrategyId, InstrumentId]] = {}
        self._instrument_ids: dict[str, InstrumentId] = {}
        self._account_ids: dict[str, AccountId] = {}
        self._values: dict[tuple[Any, str], Any] = {}
        self._last_coid_text: str | None = None
        self._last_voi_text: str | None = None
        self._last_voi: VenueOrderId | None = None
        self._last_coid: ClientOrderId | None = None
        self.fallbacks = 0  # payloads that took the serializer's path

    # -- public -----------------------------------------------------------------------------

    def decode(self, raw: bytes) -> Any:
        """The object `serializer.deserialize(raw)` returns (an equal one)."""
        try:
            values = self._typed(raw)
            return self._BUILDERS[type(values)](self, values)
        except (_Fallback, KeyError, TypeError, ValueError, msgspec.DecodeError, msgspec.ValidationError):
            self.fallbacks += 1
            return deserialize_checked(self._serializer, raw)

    def order(self, raw_init: bytes) -> Any:
        """
        The order ``OrderUnpacker.from_init(serializer.deserialize(raw_init))`` returns (an
        equal one) from its first payload. LIMIT and MARKET orders are built straight from the
        payload with the constructor ``from_init`` ends in (the order builds its own
        ``OrderInitialized``, so decoding one first would be thrown away); other types, and
        anything off the fast path, go through ``from_init``.
        """
        try:
            values = self._typed(raw_init)
            make = self._ORDER_MAKERS.get(values.order_type) if type(values) is _OrderInitialized else None
            if make is not None:
                return make(self, values)
        except (_Fallback, KeyError, TypeError, ValueError, AttributeError, msgspec.DecodeError,
                msgspec.ValidationError):
            self.fallbacks += 1
        init = self.decode(raw_init)
        if type(init) is not OrderInitialized:
            raise TypeError(f"first event is {type(init).__name__}, not OrderInitialized")
        return OrderUnpacker.from_init(init)

    def closed_order(self, client_order_id: str, raw_events: list[bytes]) -> ClosedOrder | None:
        """
        What the events of a *plainly closed* order say without building it (one light decode
        per payload into `_LightEvent` structs, no NautilusTrader objects): None unless every payload takes the fast path
        and the order is certainly closed and stands alone - a single ``OrderInitialized``
        first, no ``OrderUpdated`` (quantity unchanged), no contingency, order list, parent,
        exec algorithm or emulation, every event of this order with a distinct id, and the last
        event, and only it, terminal (canceled, expired, rejected, denied, or a fill that
        completes the quantity exactly). Anything else is built before trading.
        """
        try:
            typed = [self._light(raw) for raw in raw_events]
            if not typed or type(typed[0]) is not _LightInitialized:
                return None
            init = typed[0]
            if (init.order_list_id is not None or init.parent_order_id is not None or init.linked_order_ids
                    or init.exec_algorithm_id is not None or init.exec_spawn_id is not None
                    or init.contingency_type != "NO_CONTINGENCY" or init.emulation_trigger not in (None, "NO_TRIGGER")):
                return None
            event_ids: set[str] = set()
            trade_ids: set[str] = set()
            fills: list[str] = []  # quantities as written
            last = len(typed) - 1
            for n, values in enumerate(typed):
                kind = type(values)
                if values.client_order_id != client_order_id or values.event_id in event_ids:
                    return None
                event_ids.add(values.event_id)
                if n and kind in (_LightInitialized, _LIGHT_UPDATED):
                    return None
                if kind is _LightFilled:
                    if values.trade_id in trade_ids:
                        return None
                    trade_ids.add(values.trade_id)
                    fills.append(values.last_qty)
                    if n < last and _completes(fills, init.quantity) is not False:
                        return None  # filled (or past it) before the end: let the full replay judge it
                elif n < last and kind in _TERMINAL:
                    return None
            final = typed[-1]
            status = "FILLED" if type(final) is _LightFilled and _completes(fills, init.quantity) else _TERMINAL.get(type(final))
            if status is None:
                return None
            ts_last = self._ts(final.ts_event if final.ts_event is not None else final.ts_init)
        except (_Fallback, ArithmeticError, TypeError, ValueError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        return ClosedOrder(status=status, trade_ids=frozenset(trade_ids), ts_last=ts_last)

    # -- value helpers -----------------------------------------------------------------------

    def _ts(self, value: Any) -> int:
        """The serializer's timestamp rule (``ts_*`` keys) for one value."""
        if type(value) is str:
            if value == self._last_ts_text:  # ts_event and ts_init are usually the same text
                return self._last_ts
            if not self._convert_ts:
                raise _Fallback
            if value.isdigit() and value.isascii():
                ns = int(value)
            else:
                ns = self._iso_to_ns(value)
            self._last_ts_text, self._last_ts = value, ns
            return ns
        if self._convert_ts:
            raise _Fallback  # the serializer's regex refuses non-text timestamps
        return value

    def _iso_to_ns(self, value: str) -> int:
        """
        ``pd.Timestamp(value, tz=utc).value`` for the shape the serializer writes
        (``YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z``); anything else raises `_Fallback`. The
        ``YYYY-MM-DDTHH:MM:SS`` prefix is converted once per second and memoised.
        """
        base = self._seconds.get(value[:19])
        if base is None:
            base = self._second_to_ns(value[:19])
        if len(value) == 20:
            if value[19] != "Z":
                raise _Fallback
            return base
        digits = value[20:-1]
        scale = _FRACTION_SCALE.get(len(digits))
        if scale is None or value[19] != "." or value[-1] != "Z" or not (digits.isdigit() and digits.isascii()):
            raise _Fallback
        return base + int(digits) * scale

    def _second_to_ns(self, prefix: str) -> int:
        m = _ISO_SECOND.fullmatch(prefix)
        if m is None:
            raise _Fallback
        year, month, day, hour, minute, second = map(int, m.groups())
        if hour > 23 or minute > 59 or second > 59:
            raise _Fallback
        try:
            days = _dt.date(year, month, day).toordinal() - _EPOCH_ORDINAL
        except ValueError:
            raise _Fallback from None
        base = (days * 86400 + hour * 3600 + minute * 60 + second) * 1_000_000_000
        if not 0 <= base <= _TS_MAX - 999_999_999:
            raise _Fallback  # serializer territory (pandas bounds, uint64 timestamps)
        if len(self._seconds) < 1_000_000:
            self._seconds[prefix] = base
        return base

    def _value(self, factory: Callable[[str], Any], text: str) -> Any:
        """Memoised immutable value (price, quantity, money, currency) built by `factory(text)`."""
        key = (factory, text)
        obj = self._values.get(key)
        if obj is None:
            obj = self._values[key] = factory(text)
        return obj

    def _ids(self, v: Any) -> tuple:
        """trader_id, strategy_id, instrument_id, client_order_id (memoised where repeated)."""
        key = (v.trader_id, v.strategy_id, v.instrument_id)
        head = self._heads.get(key)
        if head is None:
            head = self._heads[key] = (TraderId(v.trader_id), StrategyId(v.strategy_id), self._instrument_id(v.instrument_id))
        if v.client_order_id != self._last_coid_text:  # an order's events come one after another
            self._last_coid_text = v.client_order_id
            self._last_coid = ClientOrderId(v.client_order_id)
        return head + (self._last_coid,)

    def _venue_order_id(self, text: str | None) -> VenueOrderId | None:
        """Memoised for the order at hand: its accepted, updated and filled events repeat it."""
        if text is None:
            return None
        if text != self._last_voi_text:
            self._last_voi_text = text
            self._last_voi = VenueOrderId(text)
        return self._last_voi

    def _account_id(self, text: str | None) -> AccountId | None:
        if text is None:
            return None
        account_id = self._account_ids.get(text)
        if account_id is None:
            account_id = self._account_ids[text] = AccountId(text)
        return account_id

    def _instrument_id(self, text: str) -> InstrumentId:
        instrument_id = self._instrument_ids.get(text)
        if instrument_id is None:
            instrument_id = self._instrument_ids[text] = InstrumentId.from_str(text)
        return instrument_id

    @staticmethod
    def _uuid(text: str) -> UUID4:
        if _UUID4_CANONICAL.fullmatch(text):
            uuid = UUID4.__new__(UUID4)
            uuid.__setstate__(text)  # the Rust parse UUID4.from_str ends with
            return uuid
        return UUID4.from_str(text)

    # -- builders (each mirrors its type's from_dict_c; constructor arguments positional) --------

    def _init_links(self, v: _OrderInitialized) -> tuple:
        """contingency_type .. tags of an ``OrderInitialized`` payload, as ``from_dict_c`` reads them."""
        linked_order_ids = v.linked_order_ids
        tags = v.tags
        if isinstance(linked_order_ids, str):
            linked_order_ids = linked_order_ids.split(",")
        if isinstance(tags, str):
            tags = tags.split(",")
        return (
            _CONTINGENCIES[v.contingency_type],
            OrderListId(v.order_list_id) if v.order_list_id is not None else None,
            [ClientOrderId(o) for o in linked_order_ids] if linked_order_ids is not None else None,
            ClientOrderId(v.parent_order_id) if v.parent_order_id is not None else None,
            ExecAlgorithmId(v.exec_algorithm_id) if v.exec_algorithm_id is not None else None,
            v.exec_algorithm_params,
            ClientOrderId(v.exec_spawn_id) if v.exec_spawn_id is not None else None,
            tags,
        )

    def _emulation(self, v: _OrderInitialized) -> tuple:
        return (
            _TRIGGERS_BY_NAME[v.emulation_trigger] if v.emulation_trigger is not None else TriggerType.NO_TRIGGER,
            self._instrument_id(v.trigger_instrument_id) if v.trigger_instrument_id is not None else None,
        )

    def _order_initialized(self, v: _OrderInitialized) -> OrderInitialized:
        if v.ts_event is not None:
            self._ts(v.ts_event)  # converted (and checked) by the serializer, unused by from_dict
        return OrderInitialized(
            *self._ids(v),
            _SIDES[v.order_side],
            _ORDER_TYPES[v.order_type],
            self._value(Quantity.from_str, v.quantity),
            _TIFS[v.time_in_force],
            v.post_only,
            v.reduce_only,
            v.quote_quantity,
            v.options,
            *self._emulation(v),
            *self._init_links(v),
            self._uuid(v.event_id),
            self._ts(v.ts_init),
            v.reconciliation,
        )

    # Orders straight from their OrderInitialized payload: the arguments LimitOrder.create_c /
    # MarketOrder.create_c pass, in the constructors' positional order.

    def _limit_order(self, v: _OrderInitialized) -> LimitOrder:
        if v.ts_event is not None:
            self._ts(v.ts_event)
        options = v.options
        display_qty = options.get("display_qty")
        return LimitOrder(
            *self._ids(v),
            _SIDES[v.order_side],
            self._value(Quantity.from_str, v.quantity),
            self._value(Price.from_str, options["price"]),
            self._uuid(v.event_id),
            self._ts(v.ts_init),
            _TIFS[v.time_in_force],
            options["expire_time_ns"],
            v.post_only,
            v.reduce_only,
            v.quote_quantity,
            self._value(Quantity.from_str, display_qty) if display_qty is not None else None,
            *self._emulation(v),
            *self._init_links(v),
        )

    def _market_order(self, v: _OrderInitialized) -> MarketOrder:
        if v.ts_event is not None:
            self._ts(v.ts_event)
        if v.emulation_trigger is not None:
            _TRIGGERS_BY_NAME[v.emulation_trigger]  # checked by from_dict_c, not passed on by create_c
        if v.trigger_instrument_id is not None:
            self._instrument_id(v.trigger_instrument_id)
        return MarketOrder(
            *self._ids(v),
            _SIDES[v.order_side],
            self._value(Quantity.from_str, v.quantity),
            self._uuid(v.event_id),
            self._ts(v.ts_init),
            _TIFS[v.time_in_force],
            v.reduce_only,
            v.quote_quantity,
            *self._init_links(v),
        )

    def _order_denied(self, v: _OrderDenied) -> OrderDenied:
        if v.ts_event is not None:
            self._ts(v.ts_event)
        return OrderDenied(*self._ids(v), v.reason, self._uuid(v.event_id), self._ts(v.ts_init))

    def _order_emulated(self, v: _OrderEmulated) -> OrderEmulated:
        if v.ts_event is not None:
            self._ts(v.ts_event)
        return OrderEmulated(*self._ids(v), self._uuid(v.event_id), self._ts(v.ts_init))

    def _order_released(self, v: _OrderReleased) -> OrderReleased:
        if v.ts_event is not None:
            self._ts(v.ts_event)
        return OrderReleased(
            *self._ids(v), self._value(Price.from_str, v.released_price), self._uuid(v.event_id), self._ts(v.ts_init),
        )

    def _order_submitted(self, v: _OrderSubmitted) -> OrderSubmitted:
        return OrderSubmitted(
            *self._ids(v), self._account_id(v.account_id), self._uuid(v.event_id), self._ts(v.ts_event), self._ts(v.ts_init),
        )

    def _order_accepted(self, v: _OrderAccepted) -> OrderAccepted:
        return OrderAccepted(
            *self._ids(v),
            self._venue_order_id(v.venue_order_id),
            self._account_id(v.account_id),
            self._uuid(v.event_id),
            self._ts(v.ts_event),
            self._ts(v.ts_init),
            v.reconciliation,
        )

    def _order_rejected(self, v: _OrderRejected) -> OrderRejected:
        return OrderRejected(
            *self._ids(v),
            self._account_id(v.account_id),
            v.reason,
            self._uuid(v.event_id),
            self._ts(v.ts_event),
            self._ts(v.ts_init),
            v.reconciliation,
            v.due_post_only,
        )

    @staticmethod
    def _venue_event(cls: type) -> Callable[[Any, Any], Any]:
        def build(self: EventDecoder, v: _VenueEvent) -> Any:
            return cls(
                *self._ids(v),
                self._venue_order_id(v.venue_order_id),
                self._account_id(v.account_id),
                self._uuid(v.event_id),
                self._ts(v.ts_event),
                self._ts(v.ts_init),
                v.reconciliation,
            )

        return build

    @staticmethod
    def _venue_rejection(cls: type) -> Callable[[Any, Any], Any]:
        def build(self: EventDecoder, v: _VenueRejection) -> Any:
            return cls(
                *self._ids(v),
                self._venue_order_id(v.venue_order_id),
                self._account_id(v.account_id),
                v.reason,
                self._uuid(v.event_id),
                self._ts(v.ts_event),
                self._ts(v.ts_init),
                v.reconciliation,
            )

        return build

    def _order_updated(self, v: _OrderUpdated) -> OrderUpdated:
        value = self._value
        return OrderUpdated(
            *self._ids(v),
            self._venue_order_id(v.venue_order_id),
            self._account_id(v.account_id),
            value(Quantity.from_str, v.quantity),
            value(Price.from_str, v.price) if v.price is not None else None,
            value(Price.from_str, v.trigger_price) if v.trigger_price is not None else None,
            self._uuid(v.event_id),
            self._ts(v.ts_event),
            self._ts(v.ts_init),
            v.reconciliation,
            v.is_quote_quantity,
        )

    def _order_filled(self, v: _OrderFilled) -> OrderFilled:
        value = self._value
        return OrderFilled(
            *self._ids(v),
            self._venue_order_id(v.venue_order_id),
            self._account_id(v.account_id),
            TradeId(v.trade_id),
            value(PositionId, v.position_id) if v.position_id is not None else None,
            _SIDES[v.order_side],
            _ORDER_TYPES[v.order_type],
            value(Quantity.from_str, v.last_qty),
            value(Price.from_str, v.last_px),
            value(Currency.from_str, v.currency),
            value(Money.from_str, v.commission),
            _LIQUIDITY[v.liquidity_side],
            self._uuid(v.event_id),
            self._ts(v.ts_event),
            self._ts(v.ts_init),
            v.reconciliation,
            v.info,
        )

    def _balance(self, values: dict) -> AccountBalance:
        """``AccountBalance.from_dict`` with the currency and amounts memoised (both immutable)."""
        currency = self._value(Currency.from_str, values["currency"])
        money = self._money
        return AccountBalance(money(values["total"], currency), money(values["locked"], currency),
                              money(values["free"], currency))

    def _money(self, amount: Any, currency: Currency) -> Money:
        key = (type(amount), amount, currency)
        obj = self._values.get(key)
        if obj is None:
            obj = self._values[key] = Money(amount, currency)
        return obj

    def _account_state(self, v: _AccountState) -> AccountState:
        return AccountState(
            self._account_id(v.account_id),
            _ACCOUNT_TYPES[v.account_type],
            self._value(Currency.from_str, v.base_currency) if v.base_currency is not None else None,
            v.reported,
            [self._balance(b) for b in v.balances],
            [MarginBalance.from_dict(m) for m in v.margins],
            v.info,
            self._uuid(v.event_id),
            self._ts(v.ts_event),
            self._ts(v.ts_init),
        )

    # The builder per payload schema, as functions of (decoder, values): bound methods kept on the
    # instance would tie it in a reference cycle, and its caches would then outlive it until a full
    # garbage collection.
    _BUILDERS: ClassVar[dict[type, Callable[[EventDecoder, Any], Any]]] = {
        _OrderInitialized: _order_initialized,
        _OrderDenied: _order_denied,
        _OrderEmulated: _order_emulated,
        _OrderReleased: _order_released,
        _OrderSubmitted: _order_submitted,
        _OrderAccepted: _order_accepted,
        _OrderRejected: _order_rejected,
        _OrderCanceled: _venue_event(OrderCanceled),
        _OrderExpired: _venue_event(OrderExpired),
        _OrderTriggered: _venue_event(OrderTriggered),
        _OrderPendingUpdate: _venue_event(OrderPendingUpdate),
        _OrderPendingCancel: _venue_event(OrderPendingCancel),
        _OrderModifyRejected: _venue_rejection(OrderModifyRejected),
        _OrderCancelRejected: _venue_rejection(OrderCancelRejected),
        _OrderUpdated: _order_updated,
        _OrderFilled: _order_filled,
        _AccountState: _account_state,
    }
    _ORDER_MAKERS: ClassVar[dict[str, Callable[[EventDecoder, Any], Any]]] = {
        "LIMIT": _limit_order,
        "MARKET": _market_order,
    }


_FAST_ENCODE_TYPES = frozenset({
    OrderInitialized, OrderDenied, OrderEmulated, OrderReleased, OrderSubmitted, OrderAccepted, OrderRejected,
    OrderCanceled, OrderExpired, OrderTriggered, OrderPendingUpdate, OrderPendingCancel, OrderModifyRejected,
    OrderCancelRejected, OrderUpdated, OrderFilled, AccountState,
})


class EventEncoder:
    """
    Serializes exactly like `serializer.serialize`, faster, for order events and account states.

    The serializer's steps, unchanged: the type's own ``to_dict`` (the very ``to_dict_c`` its
    delegate table holds), its timestamp rule on top-level keys (``k in "expire_time_ns"`` or a
    ``ts_`` prefix; ``str(value)`` or, in ISO 8601 mode, pandas' ``isoformat()`` with ``Z``),
    and ``msgspec`` with its encoding hook. Two things are faster: the key rule is memoised
    instead of two regex calls per key, and ISO 8601 text is produced arithmetically in pandas'
    exact format (9 fraction digits when there are nanoseconds, 6 when only microseconds, none
    otherwise). Any other object, and any timestamp outside 0..2**63-1, goes to the serializer.
    tests/test_cache_compat.py compares both byte for byte.
    """

    def __init__(self, serializer: Any) -> None:
        from nautilus_trader.serialization.serializer import _serializer_encoding_hook  # noqa: PLC0415

        self._serializer = serializer
        self.encoding = detect_encoding(serializer)
        self._encode = msgspec.json.encode if self.encoding == "json" else msgspec.msgpack.encode
        self._hook = _serializer_encoding_hook
        self._iso = bool(serializer.timestamps_as_iso8601)
        self._as_str = bool(serializer.timestamps_as_str)
        self._shapes: dict[type, tuple[frozenset, list[str]]] = {}
        self._second_text: dict[int, str] = {}

    def serialize(self, obj: Any) -> bytes:
        cls = type(obj)
        if cls not in _FAST_ENCODE_TYPES:
            return self._serializer.serialize(obj)
        values = cls.to_dict(obj)
        if self._iso or self._as_str:
            # The timestamp keys of this type's dict, found once per type; reused only while the
            # dict has exactly the same keys (a set comparison in C, cheaper than the key rule).
            shape = self._shapes.get(cls)
            if shape is None or values.keys() != shape[0]:
                shape = self._shapes[cls] = (frozenset(values), [k for k in values if _is_ts_key(k)])
            iso, second_text = self._iso, self._second_text
            for key in shape[1]:
                value = values[key]
                if value is None:
                    continue
                if type(value) is not int or not 0 <= value <= _TS_MAX:
                    return self._serializer.serialize(obj)
                if not iso:
                    values[key] = str(value)
                    continue
                # pandas' isoformat() + "Z", inline (two per event on the hot path of the writer)
                seconds, fraction = divmod(value, 1_000_000_000)
                text = second_text.get(seconds)
                if text is None:
                    text = self._second(seconds)
                if not fraction:
                    values[key] = text + "Z"
                elif fraction % 1000:
                    values[key] = f"{text}.{fraction:09d}Z"
                else:
                    values[key] = f"{text}.{fraction // 1000:06d}Z"
        return self._encode(values, enc_hook=self._hook)

    def _second(self, seconds: int) -> str:
        """The date and time of day of `seconds` since the epoch as pandas writes them (memoised)."""
        days, rest = divmod(seconds, 86400)
        day = _dt.date.fromordinal(_EPOCH_ORDINAL + days)
        hour, rest = divmod(rest, 3600)
        minute, second = divmod(rest, 60)
        text = f"{day.year:04d}-{day.month:02d}-{day.day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        if len(self._second_text) >= 4096:
            self._second_text.clear()
        self._second_text[seconds] = text
        return text


def _is_ts_key(key: str) -> bool:
    """The serializer's timestamp-key rule (``k in "expire_time_ns"`` or a ``ts_`` prefix)."""
    return (key in "expire_time_ns") or key.startswith("ts_")

