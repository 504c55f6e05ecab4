"""
Read everything persisted for one trader in NautilusTrader's Redis layout
(``launcher/state/layout.py``) and rebuild NautilusTrader objects from it the way the node's
load does (``launcher/state/entities.py``, the same builders as the resilient backend's loads):
currencies, instruments, accounts, orders, positions, strategy and actor states, the index
sets and hashes, and the launcher's manifest.

Unlike the node's load it never stops at the first fault: anything that does not load becomes
a :class:`Problem` naming the entity by id. Keys are found with one escaped ``SCAN`` over the
trader's prefix and read with pipelined bulk reads. Verify, inspect, retention and the drills
use this module.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import msgspec
import redis
from nautilus_trader.cache.config import CacheConfig
from nautilus_trader.model.objects import Currency
from nautilus_trader.model.position import Position

from launcher.config.connection import connection_settings
from launcher.config.schema import LauncherConfig
from launcher.config.schema import Store
from launcher.state import layout
from launcher.state.codec import ClosedOrder
from launcher.state.codec import EventDecoder
from launcher.state.entities import CorruptState
from launcher.state.entities import build_account
from launcher.state.entities import build_currency
from launcher.state.entities import build_order
from launcher.state.entities import build_position
from launcher.state.entities import decode_order
from launcher.state.entities import describe
from launcher.state.entities import one_line
from launcher.state.gc_pause import gc_paused
from launcher.state.manifest import MANIFEST_PARTS
from launcher.state.manifest import Manifest
from launcher.state.manifest import manifest_from
from launcher.state.manifest import manifest_keys
from launcher.state.reader import BulkReader
from launcher.state.serializer import serializer_for
from launcher.store.connection import ConnectionSettings


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


@dataclass(frozen=True)
class DeferClosed:
    """
    Which orders a load may leave unbuilt: plainly closed ones (``EventDecoder.closed_order``)
    whose last event is older than `closed_before_ns` (UNIX nanoseconds), except one order per
    position (NautilusTrader's integrity check wants every loaded position to have an order).
    """

    closed_before_ns: int
    # Client order id -> `events_digest` of the stored events an earlier start built and found
    # closed (launcher/bootstrap/verified.py): the same bytes need not be built again.
    verified: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class DeferredOrder:
    """A closed order left unbuilt: its stored events and what they say."""

    events: list[bytes]
    closed: ClosedOrder
    digest: bytes = b""  # `events_digest(events)`


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
    # The stored bytes each order, position and account was rebuilt from: what a node's first
    # load may reuse (`rebuilt`); a position's list ends with its instrument's payload.
    order_events: dict[str, list[bytes]] = field(default_factory=dict)
    position_events: dict[str, list[bytes]] = field(default_factory=dict)
    account_events: dict[str, list[bytes]] = field(default_factory=dict)
    instrument_payloads: dict[str, bytes] = field(default_factory=dict)
    # Closed orders checked from their events but not built (`DeferClosed`): client order id -> order.
    deferred_orders: dict[str, DeferredOrder] = field(default_factory=dict)
    manifest: Manifest | None = None
    problems: list[Problem] = field(default_factory=list)
    keys_scanned: int = 0
    load_time_s: float = 0.0

    def problem(self, entity: str, id_: str, text: str) -> None:
        self.problems.append(Problem(entity, str(id_), one_line(text)))

    def rebuilt_orders(self) -> dict[str, tuple[list[bytes], Any]]:
        """
        ``{client order id: (stored events, order rebuilt from exactly them)}`` for a node's
        load to reuse where Redis still holds the same bytes: both rebuild with the same
        builder (``launcher.state.entities``), transformed orders included.
        """
        return {id_: (self.order_events[id_], order) for id_, order in self.orders.items() if id_ in self.order_events}

    def rebuilt(self) -> Rebuilt:
        """Every order, position and account with the stored bytes it was rebuilt from, for a node's first load."""
        return Rebuilt(
            orders=self.rebuilt_orders(),
            positions={id_: (self.position_events[id_], p) for id_, p in self.positions.items()
                       if id_ in self.position_events},
            accounts={id_: (self.account_events[id_], a) for id_, a in self.accounts.items() if id_ in self.account_events},
            deferred_orders={id_: deferred.events for id_, deferred in self.deferred_orders.items()},
        )


@dataclass(frozen=True)
class Rebuilt:
    """
    What verify rebuilt, by id, each with the stored bytes it was rebuilt from: ``orders``
    (client order id -> (events, order)), ``positions`` (position id -> (fills followed by the
    instrument's payload, position): a position also depends on its instrument) and
    ``accounts`` (account id -> (events, account)). A node's first load takes an object only
    where Redis still holds exactly those bytes. ``deferred_orders`` (client order id ->
    events) are the closed orders verify checked but did not build: the node's first load
    leaves them to be built after it started trading where Redis still holds as many events.
    """

    orders: dict[str, tuple[list[bytes], Any]]
    positions: dict[str, tuple[list[bytes], Position]]
    accounts: dict[str, tuple[list[bytes], Any]]
    deferred_orders: dict[str, list[bytes]] = field(default_factory=dict)


def state_trader_key(settings: LauncherConfig, instance_id: str | None = None) -> str:
    """The key prefix this trader's state lives under (NautilusTrader's rule; a hash tag on a cluster)."""
    config = CacheConfig(
        use_trader_prefix=settings.cache.use_trader_prefix,
        use_instance_id=settings.cache.use_instance_id,
    )
    return layout.trader_key(str(settings.trader_id), instance_id, config, hash_tag=settings.cache.store == Store.cluster)


def store_connection(settings: LauncherConfig) -> ConnectionSettings | None:
    """Where `settings` keep state (None for cache=memory); on a cluster, pinned to this trader's slot."""
    return connection_settings(settings.cache, slot_key=state_trader_key(settings))


_COMMANDS = {
    "lrange": lambda key: (b"LRANGE", key, b"0", b"-1"),
    "get": lambda key: (b"GET", key),
    "smembers": lambda key: (b"SMEMBERS", key),
    "hgetall": lambda key: (b"HGETALL", key),
}


def bulk(reader: BulkReader, commands: list[tuple[str, str]]) -> list[Any]:
    """
    Run ``(command, key)`` pairs in pipelined batches on one pooled connection, replies parsed
    by hiredis (`BulkReader`; redis-py's own parsing was a fifth of a verify); returns one
    reply per pair (SMEMBERS a set, HGETALL a dict), an exception object in place of a reply
    that failed (e.g. WRONGTYPE).
    """
    replies = reader.replies([_COMMANDS[command](key) for command, key in commands])
    for i, ((command, _), reply) in enumerate(zip(commands, replies)):
        if isinstance(reply, list) and command == "smembers":
            replies[i] = set(reply)
        elif isinstance(reply, list) and command == "hgetall":
            replies[i] = dict(zip(reply[::2], reply[1::2]))
    return replies


def load_state(client: redis.Redis, settings: LauncherConfig, *, instance_id: str | None = None,
               defer: DeferClosed | None = None) -> PersistedState:
    """Load (and decode) everything persisted for ``settings.trader_id``; with `defer`, closed orders are checked, not built."""
    started = time.perf_counter()
    trader_key = state_trader_key(settings, instance_id)
    state = PersistedState(trader_key=trader_key)
    reader = BulkReader(client, chunk=settings.cache.bulk_read_batch_size or DEFAULT_BATCH)
    # Same objects as serializer.deserialize, several times faster (launcher/state/codec.py).
    decoder = EventDecoder(serializer_for(settings.cache))

    keys_found = reader.scan(layout.scan_pattern(trader_key), count=DEFAULT_BATCH)
    state.keys_scanned = len(keys_found)
    by_collection = layout.classify(trader_key, keys_found)
    if layout.full_key(trader_key, layout.MIGRATING) in keys_found:
        state.problem("migration", trader_key, "a mode=migrate copying here did not finish (its process died part-way): "
                      "this state is incomplete; delete the trader's keys here and migrate again")

    # Read whole in one pipelined pass: everything but the event lists.
    plan: list[tuple[str, str, str, str]] = []  # (collection, id, command, key)
    for collection, command in (
        (layout.CURRENCIES, "get"),
        (layout.INSTRUMENTS, "get"),
        (layout.STRATEGIES, "get"),
        (layout.ACTORS, "get"),
    ):
        for id_, key in sorted(by_collection.get(collection, {}).items()):
            plan.append((collection, id_, command, key))
    for name in _SET_INDEXES:
        plan.append(("index", name, "smembers", layout.full_key(trader_key, name)))
    for name in _HASH_INDEXES:
        plan.append(("index", name, "hgetall", layout.full_key(trader_key, name)))
    manifest = manifest_keys(trader_key)
    for part in MANIFEST_PARTS:
        plan.append(("manifest", part, "hgetall", manifest[part]))
    raw, _ = _sort_replies(state, plan, bulk(reader, [(command, key) for _, _, command, key in plan]))

    with gc_paused():  # tens of thousands of long-lived objects, as in the node's own load
        _decode_indexes(state, raw.get("index", {}))
        _decode_currencies(state, decoder, raw.get(layout.CURRENCIES, {}))
        _decode_instruments(state, decoder, raw.get(layout.INSTRUMENTS, {}))
        _decode_states(state, decoder, raw.get(layout.STRATEGIES, {}), state.strategy_states, "strategy")
        _decode_states(state, decoder, raw.get(layout.ACTORS, {}), state.actor_states, "actor")
        # The event lists (the bulk of the state) stream: each chunk is decoded while Redis
        # already produces the next one. Positions come last: they take the instruments above.
        lists = [(collection, id_, "lrange", key)
                 for collection in (layout.ACCOUNTS, layout.ORDERS, layout.POSITIONS)
                 for id_, key in sorted(by_collection.get(collection, {}).items())]
        orders = _decode_orders
        if defer is not None:
            orders = functools.partial(_decode_orders, defer=defer, keep=_one_order_per_position(state.order_position))
        decode = {layout.ACCOUNTS: _decode_accounts, layout.ORDERS: orders, layout.POSITIONS: _decode_positions}
        commands = [_COMMANDS["lrange"](key) for _, _, _, key in lists]
        for start, replies in reader.stream(commands, settings.cache.bulk_read_batch_size or DEFAULT_BATCH):
            chunk, keys = _sort_replies(state, lists[start : start + len(replies)], replies)
            for collection, events in chunk.items():
                decode[collection](state, decoder, events, keys[collection])
    parts = raw.get("manifest", {})
    state.manifest = manifest_from(*(parts.get(part) or {} for part in MANIFEST_PARTS))
    state.load_time_s = time.perf_counter() - started
    return state


def _sort_replies(state: PersistedState, plan: list[tuple[str, str, str, str]], replies: list[Any]
                  ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """
    The replies to `plan` by collection and id, and their keys; a reply that is an error
    (e.g. WRONGTYPE) is a problem of that entity instead; a connection error is raised.
    """
    raw: dict[str, dict[str, Any]] = {}
    keys: dict[str, dict[str, str]] = {}
    for (collection, id_, _command, key), reply in zip(plan, replies, strict=True):
        if isinstance(reply, Exception):
            if isinstance(reply, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                raise reply
            entity = _ENTITY.get(collection, collection)
            state.problem(entity if collection != "index" else id_, id_ if collection != "index" else "-",
                          f"cannot be read: {reply}")
            continue
        raw.setdefault(collection, {})[id_] = reply
        keys.setdefault(collection, {})[id_] = key
    return raw, keys


_ENTITY = {
    layout.CURRENCIES: "currency",
    layout.INSTRUMENTS: "instrument",
    layout.ACCOUNTS: "account",
    layout.ORDERS: "order",
    layout.POSITIONS: "position",
    layout.STRATEGIES: "strategy",
    layout.ACTORS: "actor",
}


def _decode_indexes(state: PersistedState, raw: dict[str, Any]) -> None:
    # Members and fields come from hiredis as bytes.
    for name in _SET_INDEXES:
        state.indexes[name] = set(map(bytes.decode, raw.get(name) or ()))
    for name, into in ((layout.INDEX_ORDER_POSITION, state.order_position), (layout.INDEX_ORDER_CLIENT, state.order_client)):
        pairs = raw.get(name) or {}
        into.update(zip(map(bytes.decode, pairs), map(bytes.decode, pairs.values())))


def _decode_currencies(state: PersistedState, decoder: EventDecoder, raw: dict[str, bytes]) -> None:
    for code, value in raw.items():
        if value is None:
            continue  # deleted between SCAN and GET
        try:
            currency = build_currency(code, decoder.decode(value))
        except Exception as e:  # noqa: BLE001 (any decode failure is a finding)
            state.problem("currency", code, f"does not load: {describe(e)}")
            continue
        # As NautilusTrader's cache does on load, so instruments quoted in it can decode.
        Currency.register(currency, overwrite=False)
        state.currencies[code] = currency


def _decode_instruments(state: PersistedState, decoder: EventDecoder, raw: dict[str, bytes]) -> None:
    for id_, value in raw.items():
        if value is None:
            continue
        try:
            instrument = decoder.decode(value)
            if instrument.id.value != id_:
                raise ValueError(f"key names {id_} but the instrument is {instrument.id}")
        except Exception as e:  # noqa: BLE001
            state.problem("instrument", id_, f"does not load: {describe(e)}")
            continue
        state.instruments[id_] = instrument
        state.instrument_payloads[id_] = value


def _event_lists(state: PersistedState, collection: str, raw: dict[str, list[bytes]],
                 present: set[str]) -> Iterator[tuple[str, list[bytes]]]:
    """Record each list as present with its length (even empty or undecodable); yield the non-empty ones."""
    for id_, events in raw.items():
        present.add(id_)
        state.events_persisted[collection][id_] = len(events)
        if events:
            yield id_, events


def _decode_accounts(state: PersistedState, decoder: EventDecoder, raw: dict[str, list[bytes]],
                     keys: dict[str, str]) -> None:
    for id_, events in _event_lists(state, "accounts", raw, state.account_keys):
        try:
            account = build_account(keys[id_], [decoder.decode(value) for value in events])
            if account.id.value != id_:
                raise ValueError(f"events of {account.id} stored under {id_}")
        except CorruptState as e:
            state.problem("account", id_, e.problem)
            continue
        except Exception as e:  # noqa: BLE001
            state.problem("account", id_, f"events do not replay: {describe(e)}")
            continue
        state.accounts[id_] = account
        state.account_events[id_] = events


def _one_order_per_position(order_position: dict[str, str]) -> set[str]:
    """The order ids kept built for `DeferClosed`: the greatest order id mapped to each position."""
    chosen: dict[str, str] = {}
    for order_id, position_id in order_position.items():
        if order_id > chosen.get(position_id, ""):
            chosen[position_id] = order_id
    return set(chosen.values())


def _decode_orders(state: PersistedState, decoder: EventDecoder, raw: dict[str, list[bytes]],
                   keys: dict[str, str], defer: DeferClosed | None = None, keep: set[str] | None = None) -> None:
    for id_, events in _event_lists(state, "orders", raw, state.order_keys):
        if defer is not None and id_ not in keep:
            deferred = deferrable_order(keys[id_], id_, events, decoder, defer.closed_before_ns,
                                        defer.verified.get(id_))
            if deferred is not None:
                state.deferred_orders[id_] = deferred
                continue
        try:
            order = build_order(keys[id_], decode_order(keys[id_], events, decoder))
        except CorruptState as e:
            state.problem("order", id_, e.problem)
            continue
        # The node would load it under the id its events name: a finding, not a load failure.
        strays = [f"event {n} ({type(event).__name__}) belongs to {event.client_order_id}"
                  for n, event in enumerate(order.events, start=1) if event.client_order_id.value != id_]
        if strays:
            state.problem("order", id_, f"events do not replay: {strays[0]}, not to the order its key names")
            continue
        state.orders[id_] = order
        state.order_events[id_] = events


_encode_list = msgspec.msgpack.Encoder().encode


def events_digest(events: list[bytes]) -> bytes:
    """16 bytes that change with any byte of an order's stored events (their msgpack list, BLAKE2b)."""
    return hashlib.blake2b(_encode_list(events), digest_size=16).digest()


def deferrable_order(key: str, id_: str, events: list[bytes], decoder: EventDecoder,
                     closed_before_ns: int, verified: bytes | None = None) -> DeferredOrder | None:
    """
    The order at `key` as one that may wait until the node trades: plainly closed before
    `closed_before_ns` by its events (`EventDecoder.closed_order`), and built here in full, as
    the node will build it, which proves what the light reading cannot - every value parses, the
    events replay through NautilusTrader's own order state machine, and the order ends with the
    status they say. An earlier start proved exactly these bytes when `verified` is their
    `events_digest`: not built again. None: built now by the caller, which reports what does not build.
    """
    closed = decoder.closed_order(id_, events)
    if closed is None or closed.ts_last >= closed_before_ns:
        return None
    digest = events_digest(events)
    if digest != verified:
        try:
            order = build_order(key, decode_order(key, events, decoder))
        except CorruptState:
            return None
        if order is None or not order.is_closed or order.status_string() != closed.status:
            return None
    return DeferredOrder(events, closed, digest)


def _decode_positions(state: PersistedState, decoder: EventDecoder, raw: dict[str, list[bytes]],
                      keys: dict[str, str]) -> None:
    for id_, events in _event_lists(state, "positions", raw, state.position_keys):
        try:
            fills = [decoder.decode(value) for value in events]
            instrument_id = getattr(fills[0], "instrument_id", None)
            instrument = state.instruments.get(instrument_id.value) if instrument_id is not None else None
            if instrument_id is not None and instrument is None:
                state.problem(
                    "position", id_,
                    f"does not load: instrument {instrument_id} is not persisted (NautilusTrader would skip it)",
                )
                continue
            position = build_position(keys[id_], fills, instrument)
            if position.id.value != id_:
                raise ValueError(f"fill for position {position.id} stored under {id_}")
        except CorruptState as e:
            state.problem("position", id_, e.problem)
            continue
        except Exception as e:  # noqa: BLE001
            state.problem("position", id_, f"fills do not replay: {describe(e)}")
            continue
        state.positions[id_] = position
        if instrument is not None:
            state.position_events[id_] = [*events, state.instrument_payloads[instrument.id.value]]


def _decode_states(
    state: PersistedState,
    decoder: EventDecoder,
    raw: dict[str, bytes],
    into: dict[str, dict],
    entity: str,
) -> None:
    for id_, value in raw.items():
        if value is None:
            continue
        try:
            decoded = decoder.decode(value)
            if not isinstance(decoded, dict):
                raise TypeError(f"state is {type(decoded).__name__}, not a dict")
        except Exception as e:  # noqa: BLE001
            state.problem(entity, id_, f"saved state does not load: {describe(e)}")
            continue
        into[id_] = decoded
