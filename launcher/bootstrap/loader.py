"""
Read everything persisted for one trader in NautilusTrader's Redis layout
(``launcher/cache/layout.py``) and rebuild NautilusTrader objects from it, the way its
``CacheDatabaseAdapter`` would at start: currencies, instruments, accounts
(``AccountFactory.create`` + ``apply``), orders (``OrderUnpacker.from_init`` + ``apply``; a
second ``OrderInitialized`` is a transformation), positions (``Position(instrument,
first_fill)`` + ``apply``), strategy and actor states, the index sets and hashes, and the
launcher's manifest.

Unlike the adapter it never skips silently: anything that does not load becomes a
:class:`Problem` naming the entity by id. Keys are found with one ``SCAN`` over the trader's
prefix and read with pipelined bulk reads. Both ``verify`` and ``inspect`` use this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import msgspec
import redis
from nautilus_trader.accounting.factory import AccountFactory
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.model.events import AccountState
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.events import OrderInitialized
from nautilus_trader.model.functions import currency_type_from_str
from nautilus_trader.model.objects import Currency
from nautilus_trader.model.position import Position
from nautilus_trader.serialization.serializer import MsgSpecSerializer

from launcher.bootstrap.manifest import Manifest
from launcher.bootstrap.manifest import read_manifest
from launcher.cache import layout
from launcher.cache.codec import EventDecoder
from launcher.cache.gc_pause import gc_paused
from launcher.cache.reader import BulkReader
from launcher.cache.replay import transform_order


DEFAULT_BATCH = 1000

_SET_INDEXES = (*layout.ORDER_SET_INDEXES, *layout.POSITION_SET_INDEXES)
_HASH_INDEXES = layout.ORDER_HASH_INDEXES


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the persisted state, named by entity kind and id."""

    entity: str
    id: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return {"entity": self.entity, "id": self.id, "problem": self.problem}

    def __str__(self) -> str:
        return f"{self.entity} {self.id}: {self.problem}"


@dataclass
class PersistedState:
    """What a node for this trader would load, plus the raw facts needed to check it."""

    trader_key: str
    currencies: dict[str, Currency] = field(default_factory=dict)
    instruments: dict[str, Any] = field(default_factory=dict)  # instrument id str -> Instrument
    accounts: dict[str, Any] = field(default_factory=dict)  # account id str -> Account
    orders: dict[str, Any] = field(default_factory=dict)  # client order id str -> Order
    positions: dict[str, Position] = field(default_factory=dict)
    strategy_states: dict[str, dict] = field(default_factory=dict)
    actor_states: dict[str, dict] = field(default_factory=dict)
    # Keys that exist, by collection, even when their content did not load.
    order_keys: set[str] = field(default_factory=set)
    position_keys: set[str] = field(default_factory=set)
    account_keys: set[str] = field(default_factory=set)
    # Events persisted per entity (LLEN of its list), by collection name.
    events_persisted: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"orders": {}, "positions": {}, "accounts": {}},
    )
    indexes: dict[str, set[str]] = field(default_factory=dict)  # set index name -> members
    order_position: dict[str, str] = field(default_factory=dict)  # index:order_position
    order_client: dict[str, str] = field(default_factory=dict)  # index:order_client
    # The stored events each order was rebuilt from, and the orders a later OrderInitialized
    # transformed: what a node's load may reuse (`rebuilt_orders`).
    order_events: dict[str, list[bytes]] = field(default_factory=dict)
    transformed_orders: set[str] = field(default_factory=set)
    manifest: Manifest | None = None
    problems: list[Problem] = field(default_factory=list)
    keys_scanned: int = 0
    load_time_s: float = 0.0

    def problem(self, entity: str, id_: str, text: str) -> None:
        self.problems.append(Problem(entity, str(id_), _one_line(text)))

    def rebuilt_orders(self) -> dict[str, tuple[list[bytes], Any]]:
        """
        ``{client order id: (stored events, order rebuilt from exactly them)}`` for a node's
        load to reuse where Redis still holds the same bytes. Transformed orders are left out:
        the node's own rebuild is the reference for those.
        """
        return {id_: (self.order_events[id_], order) for id_, order in self.orders.items()
                if id_ not in self.transformed_orders and id_ in self.order_events}


def serializer_for(settings: Any) -> MsgSpecSerializer:
    """The serializer the kernel builds for this cache profile."""
    encoding = str(getattr(settings.cache, "encoding", "msgpack")).lower()
    return MsgSpecSerializer(
        encoding=msgspec.msgpack if encoding == "msgpack" else msgspec.json,
        timestamps_as_str=True,
        timestamps_as_iso8601=bool(settings.cache.timestamps_as_iso8601),
    )


def state_trader_key(settings: Any, instance_id: str | None = None) -> str:
    """The key prefix this trader's state lives under (NautilusTrader's rule)."""
    config = CacheConfig(
        use_trader_prefix=bool(settings.cache.use_trader_prefix),
        use_instance_id=bool(settings.cache.use_instance_id),
    )
    return layout.trader_key(str(settings.trader_id), instance_id, config)


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so `text` matches only itself in MATCH."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def scan_keys(client: redis.Redis, prefix: str, count: int = DEFAULT_BATCH) -> list[str]:
    """Every key starting with ``prefix`` (SCAN, never KEYS)."""
    return [
        k.decode() if isinstance(k, bytes) else k
        for k in client.scan_iter(match=glob_escape(prefix) + "*", count=count)
    ]


_COMMANDS = {
    "lrange": lambda key: (b"LRANGE", key, b"0", b"-1"),
    "get": lambda key: (b"GET", key),
    "smembers": lambda key: (b"SMEMBERS", key),
    "hgetall": lambda key: (b"HGETALL", key),
}


def bulk(client: redis.Redis, commands: list[tuple[str, str]], batch: int = DEFAULT_BATCH) -> list[Any]:
    """
    Run ``(command, key)`` pairs in pipelined batches on one pooled connection, replies parsed
    by hiredis (`BulkReader`; redis-py's own parsing was a fifth of a verify); returns one
    reply per pair (SMEMBERS a set, HGETALL a dict), an exception object in place of a reply
    that failed (e.g. WRONGTYPE).
    """
    replies = BulkReader(client, chunk=batch).replies([_COMMANDS[command](key) for command, key in commands])
    for i, ((command, _), reply) in enumerate(zip(commands, replies)):
        if isinstance(reply, list) and command == "smembers":
            replies[i] = set(reply)
        elif isinstance(reply, list) and command == "hgetall":
            replies[i] = dict(zip(reply[::2], reply[1::2]))
    return replies


def load_state(client: redis.Redis, settings: Any, *, instance_id: str | None = None) -> PersistedState:
    """Load (and decode) everything persisted for ``settings.trader_id``."""
    started = time.perf_counter()
    trader_key = state_trader_key(settings, instance_id)
    state = PersistedState(trader_key=trader_key)
    batch = int(getattr(settings.cache, "bulk_read_batch_size", None) or DEFAULT_BATCH)
    # Same objects as serializer.deserialize, several times faster (launcher/cache/codec.py).
    serializer = _FastDeserializer(EventDecoder(serializer_for(settings)))

    keys = scan_keys(client, trader_key + layout.DELIMITER, count=batch)
    state.keys_scanned = len(keys)
    by_collection = _classify(trader_key, keys)

    # One pipelined pass over everything that is read whole.
    plan: list[tuple[str, str, str, str]] = []  # (collection, id, command, key)
    for collection, command in (
        (layout.CURRENCIES, "get"),
        (layout.INSTRUMENTS, "get"),
        (layout.ACCOUNTS, "lrange"),
        (layout.ORDERS, "lrange"),
        (layout.POSITIONS, "lrange"),
        (layout.STRATEGIES, "get"),
        (layout.ACTORS, "get"),
    ):
        for id_, key in sorted(by_collection.get(collection, {}).items()):
            plan.append((collection, id_, command, key))
    for name in _SET_INDEXES:
        plan.append(("index", name, "smembers", layout.full_key(trader_key, name)))
    for name in _HASH_INDEXES:
        plan.append(("index", name, "hgetall", layout.full_key(trader_key, name)))
    replies = bulk(client, [(command, key) for _, _, command, key in plan], batch)

    raw: dict[str, dict[str, Any]] = {}
    for (collection, id_, _command, _key), reply in zip(plan, replies, strict=True):
        if isinstance(reply, Exception):
            if isinstance(reply, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                raise reply
            entity = _ENTITY.get(collection, collection)
            state.problem(entity if collection != "index" else id_, id_ if collection != "index" else "-",
                          f"cannot be read: {reply}")
            continue
        raw.setdefault(collection, {})[id_] = reply

    with gc_paused():  # tens of thousands of long-lived objects, as in the node's own load
        _decode_indexes(state, raw.get("index", {}))
        _decode_currencies(state, serializer, raw.get(layout.CURRENCIES, {}))
        _decode_instruments(state, serializer, raw.get(layout.INSTRUMENTS, {}))
        _decode_accounts(state, serializer, raw.get(layout.ACCOUNTS, {}))
        _decode_orders(state, serializer, raw.get(layout.ORDERS, {}))
        _decode_positions(state, serializer, raw.get(layout.POSITIONS, {}))
        _decode_states(state, serializer, raw.get(layout.STRATEGIES, {}), state.strategy_states, "strategy")
        _decode_states(state, serializer, raw.get(layout.ACTORS, {}), state.actor_states, "actor")
    state.manifest = read_manifest(client, trader_key)
    state.load_time_s = time.perf_counter() - started
    return state


class _FastDeserializer:
    """The ``deserialize`` the decode helpers call, backed by the resilient backend's decoder."""

    def __init__(self, decoder: EventDecoder) -> None:
        self.deserialize = decoder.decode
        self.order = decoder.order


_ENTITY = {
    layout.CURRENCIES: "currency",
    layout.INSTRUMENTS: "instrument",
    layout.ACCOUNTS: "account",
    layout.ORDERS: "order",
    layout.POSITIONS: "position",
    layout.STRATEGIES: "strategy",
    layout.ACTORS: "actor",
}


def _classify(trader_key: str, keys: list[str]) -> dict[str, dict[str, str]]:
    """``{collection: {id: key}}`` for the collections verify reads (exact prefixes, no rsplit)."""
    out: dict[str, dict[str, str]] = {}
    base = trader_key + layout.DELIMITER
    entity_collections = (layout.CURRENCIES, layout.INSTRUMENTS, layout.ACCOUNTS, layout.ORDERS, layout.POSITIONS)
    for key in keys:
        rest = key[len(base):]
        for collection in entity_collections:
            head = collection + layout.DELIMITER
            if rest.startswith(head) and len(rest) > len(head):
                out.setdefault(collection, {})[rest[len(head):]] = key
                break
        else:
            for collection in (layout.STRATEGIES, layout.ACTORS):
                head = collection + layout.DELIMITER
                tail = layout.DELIMITER + "state"
                if rest.startswith(head) and rest.endswith(tail) and len(rest) > len(head) + len(tail):
                    out.setdefault(collection, {})[rest[len(head):-len(tail)]] = key
                    break
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(e: BaseException) -> str:
    return _one_line(f"{type(e).__name__}: {e}")


def _decode_indexes(state: PersistedState, raw: dict[str, Any]) -> None:
    for name in _SET_INDEXES:
        state.indexes[name] = {_text(m) for m in (raw.get(name) or ())}
    state.order_position = {_text(k): _text(v) for k, v in (raw.get(layout.INDEX_ORDER_POSITION) or {}).items()}
    state.order_client = {_text(k): _text(v) for k, v in (raw.get(layout.INDEX_ORDER_CLIENT) or {}).items()}


def _decode_currencies(state: PersistedState, serializer: MsgSpecSerializer, raw: dict[str, bytes]) -> None:
    for code, value in raw.items():
        if value is None:
            continue  # deleted between SCAN and GET
        try:
            c_map = serializer.deserialize(value)
            currency = Currency(
                code=code,
                precision=int(c_map["precision"]),
                iso4217=int(c_map["iso4217"]),
                name=c_map["name"],
                currency_type=currency_type_from_str(c_map["currency_type"]),
            )
        except Exception as e:  # noqa: BLE001 (any decode failure is a finding)
            state.problem("currency", code, f"does not load: {_error(e)}")
            continue
        # As NautilusTrader's cache does on load, so instruments quoted in it can decode.
        Currency.register(currency, overwrite=False)
        state.currencies[code] = currency


def _decode_instruments(state: PersistedState, serializer: MsgSpecSerializer, raw: dict[str, bytes]) -> None:
    for id_, value in raw.items():
        if value is None:
            continue
        try:
            instrument = serializer.deserialize(value)
            if instrument.id.value != id_:
                raise ValueError(f"key names {id_} but the instrument is {instrument.id}")
        except Exception as e:  # noqa: BLE001
            state.problem("instrument", id_, f"does not load: {_error(e)}")
            continue
        state.instruments[id_] = instrument


def _decode_accounts(state: PersistedState, serializer: MsgSpecSerializer, raw: dict[str, list[bytes]]) -> None:
    for id_, events in raw.items():
        state.account_keys.add(id_)
        state.events_persisted["accounts"][id_] = len(events)
        if not events:
            continue
        try:
            first = serializer.deserialize(events[0])
            if not isinstance(first, AccountState):
                raise TypeError(f"first event is {type(first).__name__}, not AccountState")
            if first.account_id.value != id_:
                raise ValueError(f"event for {first.account_id} stored under {id_}")
            account = AccountFactory.create(first)
            for n, value in enumerate(events[1:], start=2):
                event = serializer.deserialize(value)
                if not isinstance(event, AccountState):
                    raise TypeError(f"event {n} is {type(event).__name__}, not AccountState")
                account.apply(event)
        except Exception as e:  # noqa: BLE001
            state.problem("account", id_, f"events do not replay: {_error(e)}")
            continue
        state.accounts[id_] = account


def _decode_orders(state: PersistedState, serializer: _FastDeserializer, raw: dict[str, list[bytes]]) -> None:
    for id_, events in raw.items():
        state.order_keys.add(id_)
        state.events_persisted["orders"][id_] = len(events)
        if not events:
            continue
        try:
            state.orders[id_], transformed = _replay_order(id_, events, serializer)
        except Exception as e:  # noqa: BLE001
            state.problem("order", id_, f"events do not replay: {_error(e)}")
            continue
        state.order_events[id_] = events
        if transformed:
            state.transformed_orders.add(id_)


def _replay_order(id_: str, events: list[bytes], serializer: _FastDeserializer) -> tuple[Any, bool]:
    """
    OrderInitialized first, then each event applied; a later OrderInitialized transforms.
    Returns the order and whether it was transformed.
    """
    order = serializer.order(events[0])
    if order.client_order_id.value != id_:
        raise ValueError(f"event for {order.client_order_id} stored under {id_}")
    seen = {order.init_id}
    transformed = False
    for n, value in enumerate(events[1:], start=2):
        event = serializer.deserialize(value)
        if event.client_order_id.value != id_:
            raise ValueError(f"event {n} ({type(event).__name__}) belongs to {event.client_order_id}")
        if event.id in seen:
            raise ValueError(f"event {n} ({type(event).__name__}) is a duplicate")
        seen.add(event.id)
        if isinstance(event, OrderInitialized):
            order = transform_order(order, event)
            transformed = True
        else:
            order.apply(event)
    return order, transformed


def _decode_positions(state: PersistedState, serializer: MsgSpecSerializer, raw: dict[str, list[bytes]]) -> None:
    for id_, events in raw.items():
        state.position_keys.add(id_)
        state.events_persisted["positions"][id_] = len(events)
        if not events:
            continue
        try:
            first = serializer.deserialize(events[0])
            if not isinstance(first, OrderFilled):
                raise TypeError(f"first event is {type(first).__name__}, not OrderFilled")
            instrument = state.instruments.get(first.instrument_id.value)
            if instrument is None:
                state.problem(
                    "position", id_,
                    f"does not load: instrument {first.instrument_id} is not persisted (NautilusTrader would skip it)",
                )
                continue
            position = Position(instrument, first)
            if position.id.value != id_:
                raise ValueError(f"fill for position {position.id} stored under {id_}")
            seen = {first.id}
            for n, value in enumerate(events[1:], start=2):
                fill = serializer.deserialize(value)
                if not isinstance(fill, OrderFilled):
                    raise TypeError(f"event {n} is {type(fill).__name__}, not OrderFilled")
                if fill.id in seen:
                    raise ValueError(f"event {n} is a duplicate fill")
                seen.add(fill.id)
                position.apply(fill)
        except Exception as e:  # noqa: BLE001
            state.problem("position", id_, f"fills do not replay: {_error(e)}")
            continue
        state.positions[id_] = position


def _decode_states(
    state: PersistedState,
    serializer: MsgSpecSerializer,
    raw: dict[str, bytes],
    into: dict[str, dict],
    entity: str,
) -> None:
    for id_, value in raw.items():
        if value is None:
            continue
        try:
            decoded = serializer.deserialize(value)
            if not isinstance(decoded, dict):
                raise TypeError(f"state is {type(decoded).__name__}, not a dict")
        except Exception as e:  # noqa: BLE001
            state.problem(entity, id_, f"saved state does not load: {_error(e)}")
            continue
        into[id_] = decoded
