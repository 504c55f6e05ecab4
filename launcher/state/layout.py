"""
NautilusTrader's Redis key layout (nautilus_trader 1.231, ``cache/database.pyx`` and
``crates/infrastructure/src/redis/cache.rs``), plus the launcher's own keys beside it.

The one owner of key names: every key is built from the names here, and SCAN patterns only by
`scan_pattern` (escaped). Every key is ``{trader_key}:{collection}:{id}`` where the trader key is
``trader-{trader_id}`` (``use_trader_prefix``) optionally followed by ``:{instance_id}``
(``use_instance_id``). Redis types per collection:

=================================  ======  ===========================================
key (after the trader key)         type    content
=================================  ======  ===========================================
general:{key}                      string  raw bytes
currencies:{code}                  string  serialized currency map
instruments:{instrument_id}        string  serialized instrument
synthetics:{instrument_id}         string  serialized synthetic instrument
accounts:{account_id}              list    serialized AccountState events (RPUSH)
orders:{client_order_id}           list    serialized order events, OrderInitialized first
positions:{position_id}            list    serialized OrderFilled events, opening fill first
actors:{component_id}:state        string  serialized state dict
strategies:{strategy_id}:state     string  serialized state dict
snapshots:orders:{id}              list    serialized order dicts
snapshots:positions:{id}           list    serialized position dicts
health:heartbeat                   string  ISO 8601 timestamp
index:order_ids                    set     client order ids that have a venue order id
index:orders                       set     all client order ids
index:orders_open / _closed        set     client order ids by state
index:orders_emulated / _inflight  set     client order ids
index:positions / _open / _closed  set     position ids
index:order_position               hash    client order id -> position id
index:order_client                 hash    client order id -> client id
=================================  ======  ===========================================

With the cluster profile (``cache=redis_cluster``) the trader part is a hash tag,
``{trader-{trader_id}}`` (then ``:{instance_id}``), and the collections follow unchanged:
NautilusTrader's own adapter cannot talk to a cluster, so byte-compatibility with it covers the
payloads and the structure, not that prefix. Single server and Sentinel keep its exact keys.

The launcher adds, under the same trader key (collections NautilusTrader never scans):

=================================  ======  ===========================================
launcher:manifest:orders           hash    client order id -> events persisted
launcher:manifest:positions        hash    position id -> events persisted
launcher:manifest:accounts         hash    account id -> events persisted
launcher:manifest:meta             hash    instance_id, updated_ns, final (0/1)
launcher:lease                     string  holder of the single-writer lease (JSON), PX TTL
launcher:migrating                 string  a ``mode=migrate`` copying here has not finished (JSON)
=================================  ======  ===========================================
"""

from __future__ import annotations

from nautilus_trader.cache.config import CacheConfig


DELIMITER = ":"

GENERAL = "general"
CURRENCIES = "currencies"
INSTRUMENTS = "instruments"
SYNTHETICS = "synthetics"
ACCOUNTS = "accounts"
ORDERS = "orders"
POSITIONS = "positions"
ACTORS = "actors"
STRATEGIES = "strategies"
SNAPSHOTS_ORDERS = "snapshots:orders"
SNAPSHOTS_POSITIONS = "snapshots:positions"
HEARTBEAT = "health:heartbeat"

INDEX_ORDER_IDS = "index:order_ids"
INDEX_ORDER_POSITION = "index:order_position"
INDEX_ORDER_CLIENT = "index:order_client"
INDEX_ORDERS = "index:orders"
INDEX_ORDERS_OPEN = "index:orders_open"
INDEX_ORDERS_CLOSED = "index:orders_closed"
INDEX_ORDERS_EMULATED = "index:orders_emulated"
INDEX_ORDERS_INFLIGHT = "index:orders_inflight"
INDEX_POSITIONS = "index:positions"
INDEX_POSITIONS_OPEN = "index:positions_open"
INDEX_POSITIONS_CLOSED = "index:positions_closed"

ORDER_SET_INDEXES = (
    INDEX_ORDER_IDS,
    INDEX_ORDERS,
    INDEX_ORDERS_OPEN,
    INDEX_ORDERS_CLOSED,
    INDEX_ORDERS_EMULATED,
    INDEX_ORDERS_INFLIGHT,
)
ORDER_HASH_INDEXES = (INDEX_ORDER_POSITION, INDEX_ORDER_CLIENT)
POSITION_SET_INDEXES = (INDEX_POSITIONS, INDEX_POSITIONS_OPEN, INDEX_POSITIONS_CLOSED)

MANIFEST_ORDERS = "launcher:manifest:orders"
MANIFEST_POSITIONS = "launcher:manifest:positions"
MANIFEST_ACCOUNTS = "launcher:manifest:accounts"
MANIFEST_META = "launcher:manifest:meta"
LEASE = "launcher:lease"
# Set on a migration's target before its first key and deleted once every key is there: a copy
# whose process died part-way must not pass for a (smaller) sound state.
MIGRATING = "launcher:migrating"


def trader_key(
    trader_id: str,
    instance_id: str | None = None,
    config: CacheConfig | None = None,
    *,
    hash_tag: bool = False,
) -> str:
    """
    The prefix of every key for `trader_id`, exactly as NautilusTrader builds it; with
    `hash_tag` (the cluster profile only) the trader part is wrapped in braces, e.g.
    ``{trader-TRADER-001}``, so every key of the trader hashes to one Redis Cluster slot:
    batches stay single-slot (MULTI/EXEC, the Lua guards) and a reshard moves the trader whole.
    """
    use_prefix = True if config is None else config.use_trader_prefix
    use_instance = False if config is None else config.use_instance_id
    key = f"trader-{trader_id}" if use_prefix else str(trader_id)
    if hash_tag:
        key = "{" + key + "}"
    if use_instance and instance_id:
        key = f"{key}{DELIMITER}{instance_id}"
    return key


def full_key(prefix: str, key: str) -> str:
    return f"{prefix}{DELIMITER}{key}"


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so `text` matches only itself in MATCH."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def scan_pattern(trader_key: str, tail: str = "*") -> str:
    """
    The SCAN MATCH pattern for `tail` (a glob, e.g. ``orders:*``) under `trader_key`. The
    trader key is escaped: NautilusTrader accepts trader ids such as ``TR[1]*-001``, whose
    unescaped pattern would match other traders' keys and miss its own. The one place
    patterns are built.
    """
    return f"{_glob_escape(trader_key)}{DELIMITER}{tail}"


# Collections read whole by id; `classify` names their keys.
ENTITY_COLLECTIONS = (GENERAL, CURRENCIES, INSTRUMENTS, SYNTHETICS, ACCOUNTS, ORDERS, POSITIONS)
STATE_COLLECTIONS = (STRATEGIES, ACTORS)  # {collection}:{id}:state
_STATE_TAIL = DELIMITER + "state"


def classify(trader_key: str, keys: list[str]) -> dict[str, dict[str, str]]:
    """
    ``{collection: {id: key}}`` for the keys of `trader_key` in the collections a load reads
    (`ENTITY_COLLECTIONS`, `STATE_COLLECTIONS`), by exact prefix: ``snapshots:orders:*``,
    indexes and the launcher's keys are never taken for entities, nor are keys of another
    trader key.
    """
    out: dict[str, dict[str, str]] = {}
    base = trader_key + DELIMITER
    skip = len(base)
    # By the key's first segment after the trader key (no collection name holds the delimiter):
    # one split and one dict lookup per key instead of a prefix test per collection.
    entities = {c: out.setdefault(c, {}) for c in ENTITY_COLLECTIONS}
    states = {c: out.setdefault(c, {}) for c in STATE_COLLECTIONS}
    tail = len(_STATE_TAIL)
    for key in keys:
        if not key.startswith(base):
            continue
        collection, _, id_ = key[skip:].partition(DELIMITER)
        if not id_:
            continue
        named = entities.get(collection)
        if named is not None:
            named[id_] = key
            continue
        named = states.get(collection)
        if named is not None and id_.endswith(_STATE_TAIL) and len(id_) > tail:
            named[id_[:-tail]] = key
    for collection in list(out):
        if not out[collection]:
            del out[collection]  # only collections with keys, as callers expect
    return out
