"""
Verify the recovered state before a node trades on it.

:func:`verify_state` loads what is persisted for the trader (``loader.load_state``) and
checks, naming every finding by entity and id:

* every entity loads: order events replay into NautilusTrader orders, position fills into
  positions, account states into accounts; instruments, currencies and saved strategy and
  actor states decode;
* every index entry resolves to an entity that exists (``index:orders``,
  ``orders_open``/``_closed``, ``order_ids``, ``orders_inflight``/``_emulated``,
  ``index:positions``/``_open``/``_closed``, ``index:order_position`` keys and values,
  ``index:order_client`` keys);
* the open/closed/in-flight indexes agree with each entity's state, and every entity is in
  ``index:orders`` / ``index:positions``;
* every position fill exists in its order's events (same order, same trade id);
* NautilusTrader's own ``Cache.check_integrity()`` passes on the loaded objects (loaded
  through the same ``cache_*`` + ``build_index`` route the execution engine uses);
* nothing the state manifest records is missing or shorter in Redis (a loss, by id);
* no order or position holds fewer events than this machine saw Redis acknowledge (its local
  record beside the spill file, ``launcher.cache.write.acked``): the manifest rolls back with
  the data when Redis goes back in time (an older AOF restored, a failover to a replica that
  lagged), this record does not. A machine without the record checks the manifest only;
* no spill file of the trader holds writes not replayed into Redis yet (``mode=verify`` only
  reads, so it reports them: path, records, and the entities a stale one is stale for).

:func:`enforce` applies ``bootstrap.verify``: strict raises :class:`VerifyFailed`, warn
logs one WARN line per problem, off does nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from nautilus_trader.cache.cache import Cache
from nautilus_trader.cache.facade import CacheDatabaseFacade

from launcher.cache.spilled import PendingSpill
from launcher.cache.spilled import entities_text
from launcher.cache.write.acked import acked_path
from launcher.cache.write.acked import read_record
from launcher.cache.write.spill import resolve_spill_dir
from launcher.config.schema import LauncherConfig
from launcher.config.schema import Mode
from launcher.config.schema import VerifyMode
from launcher.errors import ConfigError
from launcher.errors import RedisUnavailable
from launcher.errors import VerifyFailed
from launcher.state import layout
from launcher.state.loader import DeferClosed
from launcher.state.loader import PersistedState
from launcher.state.loader import Problem
from launcher.state.loader import load_state


log = logging.getLogger("launcher.bootstrap")

_SHOWN_IN_ERROR = 3


@dataclass
class RecoveryReport:
    """What verify found: counts, load time, problems, manifest status."""

    trader_id: str
    trader_key: str
    counts: dict[str, int] = field(default_factory=dict)
    load_time_s: float = 0.0
    verify_time_s: float = 0.0
    keys_scanned: int = 0
    problems: list[Problem] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    integrity_check: bool | None = None
    skipped: str | None = None  # why verify did not run, when it did not
    # What was loaded, for the node's own load to reuse (not part of the report's output).
    state: PersistedState | None = field(default=None, repr=False, compare=False)

    @property
    def sound(self) -> bool:
        return self.skipped is None and not self.problems

    @property
    def status(self) -> str:
        if self.skipped is not None:
            return "skipped"
        return "sound" if not self.problems else "problems"

    def to_dict(self) -> dict[str, Any]:
        return {
            "trader_id": self.trader_id,
            "trader_key": self.trader_key,
            "status": self.status,
            "skipped": self.skipped,
            "counts": dict(self.counts),
            "load_time_s": round(self.load_time_s, 6),
            "verify_time_s": round(self.verify_time_s, 6),
            "keys_scanned": self.keys_scanned,
            "integrity_check": self.integrity_check,
            "manifest": dict(self.manifest),
            "problems": [p.to_dict() for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def summary(self) -> str:
        """One line: N problems, the first few named."""
        n = len(self.problems)
        shown = "; ".join(str(p) for p in self.problems[:_SHOWN_IN_ERROR])
        more = f"; and {n - _SHOWN_IN_ERROR} more" if n > _SHOWN_IN_ERROR else ""
        return f"{n} problem{'' if n == 1 else 's'} in the recovered state of trader {self.trader_id}: {shown}{more}"

    def render(self) -> str:
        """A human-readable report."""
        c = self.counts
        lines = [f"Recovery report: trader {self.trader_id} (keys {self.trader_key}:*)"]
        if self.skipped is not None:
            lines.append(f"  verification SKIPPED: {self.skipped}")
            return "\n".join(lines)
        lines += [
            f"  loaded {self.keys_scanned} keys in {self.load_time_s:.3f} s (checks {self.verify_time_s:.3f} s)",
            f"  orders:      {c.get('orders', 0):>6}  (open {c.get('orders_open', 0)}, "
            f"closed {c.get('orders_closed', 0)}, in flight {c.get('orders_inflight', 0)})"
            + (f"; {c['orders_deferred']} closed ones checked now, built after the node starts"
               if c.get("orders_deferred") else ""),
            f"  positions:   {c.get('positions', 0):>6}  (open {c.get('positions_open', 0)}, "
            f"closed {c.get('positions_closed', 0)})",
            f"  accounts:    {c.get('accounts', 0):>6}",
            f"  instruments: {c.get('instruments', 0):>6}  currencies: {c.get('currencies', 0)}",
            f"  strategies with saved state: {c.get('strategies', 0)}",
            f"  manifest:    {_manifest_line(self.manifest)}",
            "  NautilusTrader integrity check: "
            + {True: "passed", False: "FAILED", None: "not run"}[self.integrity_check],
        ]
        if not self.problems:
            lines.append("  RESULT: SOUND (0 problems)")
        else:
            n = len(self.problems)
            lines.append(f"  RESULT: {n} PROBLEM{'' if n == 1 else 'S'}")
            lines += [f"    - {p}" for p in self.problems]
        return "\n".join(lines)


def _manifest_line(manifest: dict[str, Any]) -> str:
    if not manifest.get("present"):
        return "none (nothing recorded yet: losses cannot be detected against it)"
    when = ""
    if manifest.get("updated_ns"):
        when = " at " + datetime.fromtimestamp(manifest["updated_ns"] / 1e9, tz=UTC).isoformat(timespec="seconds")
    how = "clean stop" if manifest.get("final") else "NOT a clean stop (node crashed or is running)"
    return (
        f"{how}, written by instance {manifest.get('instance_id') or '?'}{when}; "
        f"records {_n(manifest.get('orders', 0), 'order')}, {_n(manifest.get('positions', 0), 'position')}, "
        f"{_n(manifest.get('accounts', 0), 'account')}"
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def verify_state(client: redis.Redis, settings: LauncherConfig, *, instance_id: str | None = None,
                 pending_spills: Sequence[PendingSpill] = (), defer: DeferClosed | None = None) -> RecoveryReport:
    """
    Load and check everything persisted for ``settings.trader_id``; return the report (and
    write it as JSON to ``settings.bootstrap.report_path`` when set). `pending_spills` (spill
    files not replayed, `launcher.cache.spilled.inspect_pending`) are problems too. Never raises
    for problems in the state: :func:`enforce` decides. Raises RedisUnavailable when Redis
    stops answering mid-way. With `defer`, plainly closed orders are checked from their events
    (closed, this order's own, no duplicate, their fills those of the positions) but not built:
    the node builds them after it started trading (``launcher.cache.history``).
    """
    trader_id = str(settings.trader_id)
    if settings.mode == Mode.run and settings.cache.flush_on_start:
        report = RecoveryReport(trader_id=trader_id, trader_key="")
        report.skipped = "cache.flush_on_start=true: the node deletes the persisted state at start, so it is not loaded"
        log.warning("Verify skipped: %s", report.skipped)
        _write_report(report, settings)
        return report
    try:
        state = load_state(client, settings, instance_id=instance_id, defer=defer)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise RedisUnavailable(f"Redis stopped answering while loading the state to verify: {e}") from None
    started = time.perf_counter()
    problems = list(state.problems)
    problems += check_index_references(state)
    problems += check_index_states(state)
    problems += check_position_fills(state)
    problems += check_manifest(state)
    record = acked_path(resolve_spill_dir(settings.cache.spill_dir), state.trader_key)
    try:
        acknowledged = read_record(record)
    except OSError as e:  # a damaged state dir must not stop verify: the manifest check still runs
        log.warning("Cannot read the acknowledged-writes record %s (%s): Redis is checked against its manifest only",
                    record, e)
        acknowledged = {}
    problems += check_acknowledged(state, acknowledged, record)
    # A file whose events are all in Redis only waits for replicas: the state here is complete.
    problems += [Problem("spill file", str(spill.path), _pending_text(spill)) for spill in pending_spills
                 if not spill.applied]
    for spill in pending_spills:
        if spill.applied:
            log.warning("Spill file %s: its %d write(s) are in Redis, waiting for replicas to acknowledge them",
                        spill.path, spill.records)
    integrity = nautilus_integrity_check(state)
    if integrity is False:
        problems.append(Problem("cache", state.trader_key, "NautilusTrader's Cache.check_integrity() failed on the loaded state"))
    report = RecoveryReport(
        trader_id=trader_id,
        trader_key=state.trader_key,
        counts=count_state(state),
        load_time_s=state.load_time_s,
        verify_time_s=time.perf_counter() - started,
        keys_scanned=state.keys_scanned,
        problems=problems,
        manifest=state.manifest.to_dict() if state.manifest is not None else {"present": False},
        integrity_check=integrity,
        state=state,
    )
    if settings.cache.use_instance_id and instance_id is None:
        log.warning(
            "cache.use_instance_id=true: every run writes under a new instance id; "
            "verified only %s:* (state of earlier runs is not recovered by a new node)",
            state.trader_key,
        )
    log.info(
        "Verify %s: %d problem(s); %s",
        "passed" if not problems else "FAILED", len(problems),
        ", ".join(f"{k} {v}" for k, v in report.counts.items()),
    )
    _write_report(report, settings)
    return report


def _pending_text(spill: PendingSpill) -> str:
    text = f"{spill.records} spilled write(s), {spill.unapplied} event(s) of them not in Redis yet"
    if spill.stale:
        text += f"; STALE for {entities_text(spill.stale)}"
    return text


def _write_report(report: RecoveryReport, settings: LauncherConfig) -> None:
    path = settings.bootstrap.report_path
    if not path:
        return
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(report.to_json() + "\n")
        tmp.replace(target)
        log.info("Recovery report written to %s", target)
    except OSError as e:
        with contextlib.suppress(OSError):  # written but not moved (a directory at `path`): no stray file
            if tmp.is_file():
                tmp.unlink()
        if settings.mode == Mode.verify:  # the report is what was asked for
            raise ConfigError("bootstrap.report_path", f"cannot write the recovery report to {path}: "
                                                       f"{e.strerror or e}") from None
        log.error("Could not write the recovery report to %s: %s", path, e)


def enforce(report: RecoveryReport, mode: VerifyMode) -> None:
    """strict: raise VerifyFailed on any problem; warn: one WARN line per problem; off: nothing."""
    if mode == VerifyMode.off or report.skipped is not None:
        return
    if not report.problems:
        return
    if mode == VerifyMode.strict:
        raise VerifyFailed(report.summary())
    for problem in report.problems:
        log.warning("WARN verify: %s", problem)
    log.warning("verify=warn: continuing despite %d problem(s) in the recovered state", len(report.problems))


def count_state(state: PersistedState) -> dict[str, int]:
    orders = state.orders.values()
    positions = state.positions.values()
    deferred = len(state.deferred_orders)  # closed, all of them
    counts = {
        "orders": len(state.orders) + deferred,
        "orders_open": sum(1 for o in orders if o.is_open),
        "orders_closed": sum(1 for o in orders if o.is_closed) + deferred,
        "orders_inflight": sum(1 for o in orders if o.is_inflight),
        "positions": len(state.positions),
        "positions_open": sum(1 for p in positions if p.is_open),
        "positions_closed": sum(1 for p in positions if p.is_closed),
        "accounts": len(state.accounts),
        "instruments": len(state.instruments),
        "currencies": len(state.currencies),
        "strategies": len(state.strategy_states),
    }
    if deferred:
        counts["orders_deferred"] = deferred
    return counts


def check_index_references(state: PersistedState) -> list[Problem]:
    """Every index entry names an order/position whose key exists (one problem per missing id)."""
    missing_orders: dict[str, list[str]] = {}
    missing_positions: dict[str, list[str]] = {}
    for name in layout.ORDER_SET_INDEXES:
        for id_ in state.indexes.get(name, ()):
            if id_ not in state.order_keys:
                missing_orders.setdefault(id_, []).append(name)
    for id_ in state.order_position:
        if id_ not in state.order_keys:
            missing_orders.setdefault(id_, []).append(f"{layout.INDEX_ORDER_POSITION} (key)")
    for id_ in state.order_client:
        if id_ not in state.order_keys:
            missing_orders.setdefault(id_, []).append(f"{layout.INDEX_ORDER_CLIENT} (key)")
    for name in layout.POSITION_SET_INDEXES:
        for id_ in state.indexes.get(name, ()):
            if id_ not in state.position_keys:
                missing_positions.setdefault(id_, []).append(name)
    for order_id, position_id in state.order_position.items():
        if position_id not in state.position_keys:
            missing_positions.setdefault(position_id, []).append(f"{layout.INDEX_ORDER_POSITION} (value of {order_id})")
    problems = [
        Problem("order", id_, f"missing: listed in {', '.join(where)} but {layout.ORDERS}:{id_} does not exist")
        for id_, where in sorted(missing_orders.items())
    ]
    problems += [
        Problem("position", id_, f"missing: listed in {', '.join(where)} but {layout.POSITIONS}:{id_} does not exist")
        for id_, where in sorted(missing_positions.items())
    ]
    return problems


def check_index_states(state: PersistedState) -> list[Problem]:
    """Open/closed/in-flight indexes agree with each loaded order's and position's state."""
    problems: list[Problem] = []
    idx = state.indexes
    listed, opened, closed, flying = (idx.get(name, set()) for name in (
        layout.INDEX_ORDERS, layout.INDEX_ORDERS_OPEN, layout.INDEX_ORDERS_CLOSED, layout.INDEX_ORDERS_INFLIGHT))
    # Sorted only where something disagrees (problems in id order): most states have nothing to report.
    for id_, order in state.orders.items():
        is_open, is_closed, is_inflight = order.is_open, order.is_closed, order.is_inflight
        if (id_ in listed and is_open == (id_ in opened) and is_closed == (id_ in closed)
                and is_inflight == (id_ in flying)):
            continue
        wrong: list[str] = []
        if id_ not in listed:
            wrong.append(f"not in {layout.INDEX_ORDERS}")
        in_open = id_ in opened
        in_closed = id_ in closed
        if is_open and not in_open:
            wrong.append(f"open but not in {layout.INDEX_ORDERS_OPEN}")
        if not is_open and in_open:
            wrong.append(f"not open but in {layout.INDEX_ORDERS_OPEN}")
        if is_closed and not in_closed:
            wrong.append(f"closed but not in {layout.INDEX_ORDERS_CLOSED}")
        if not is_closed and in_closed:
            wrong.append(f"not closed but in {layout.INDEX_ORDERS_CLOSED}")
        in_flight = id_ in flying
        if is_inflight and not in_flight:
            wrong.append(f"in flight but not in {layout.INDEX_ORDERS_INFLIGHT}")
        if not is_inflight and in_flight:
            wrong.append(f"not in flight but in {layout.INDEX_ORDERS_INFLIGHT}")
        problems.append(Problem("order", id_, f"index disagrees with status {order.status_string()}: {'; '.join(wrong)}"))
    for id_, deferred in state.deferred_orders.items():
        if id_ in listed and id_ in closed and id_ not in opened and id_ not in flying:
            continue  # the usual case, without building the texts below
        wrong = [text for text, bad in (
            (f"not in {layout.INDEX_ORDERS}", id_ not in listed), (f"not open but in {layout.INDEX_ORDERS_OPEN}", id_ in opened),
            (f"closed but not in {layout.INDEX_ORDERS_CLOSED}", id_ not in closed),
            (f"not in flight but in {layout.INDEX_ORDERS_INFLIGHT}", id_ in flying)) if bad]
        if wrong:
            problems.append(Problem("order", id_, f"index disagrees with status {deferred.closed.status}: {'; '.join(wrong)}"))
    problems.sort(key=lambda p: p.id)
    position_problems: list[Problem] = []
    for id_, position in state.positions.items():
        wrong = []
        if id_ not in idx.get(layout.INDEX_POSITIONS, ()):
            wrong.append(f"not in {layout.INDEX_POSITIONS}")
        in_open = id_ in idx.get(layout.INDEX_POSITIONS_OPEN, ())
        in_closed = id_ in idx.get(layout.INDEX_POSITIONS_CLOSED, ())
        if position.is_open and not in_open:
            wrong.append(f"open but not in {layout.INDEX_POSITIONS_OPEN}")
        # An open position also listed as closed is NautilusTrader's own doing, not damage: a
        # NETTING position id reopened after closing is re-added (SADD open) without SREM closed.
        if position.is_closed and not in_closed:
            wrong.append(f"closed but not in {layout.INDEX_POSITIONS_CLOSED}")
        if position.is_closed and in_open:
            wrong.append(f"closed but in {layout.INDEX_POSITIONS_OPEN}")
        if wrong:
            state_text = "open" if position.is_open else "closed"
            position_problems.append(Problem("position", id_, f"index disagrees with state {state_text}: {'; '.join(wrong)}"))
    return problems + sorted(position_problems, key=lambda p: p.id)


def check_position_fills(state: PersistedState) -> list[Problem]:
    """Every fill a position holds is a fill of a persisted order (same client order id and trade id)."""
    problems: list[Problem] = []
    for id_, position in sorted(state.positions.items()):
        for fill in position.events:
            order_id = fill.client_order_id.value
            if order_id not in state.order_keys:
                problems.append(Problem(
                    "position", id_, f"fill {fill.trade_id} is from order {order_id}, which is not persisted",
                ))
                continue
            order = state.orders.get(order_id)
            deferred = state.deferred_orders.get(order_id)
            if order is None and deferred is None:
                continue  # the order itself is reported as not loading
            if (fill.trade_id.value not in deferred.closed.trade_ids) if order is None else (fill.trade_id not in order.trade_ids):
                problems.append(Problem(
                    "position", id_, f"fill {fill.trade_id} is not among the fills of order {order_id}",
                ))
    return problems


_MANIFEST_ENTITIES = (("orders", "order"), ("positions", "position"), ("accounts", "account"))


def check_manifest(state: PersistedState) -> list[Problem]:
    """Anything the manifest records that Redis lacks, or holds fewer events of, is a loss."""
    manifest = state.manifest
    if manifest is None or not manifest.present:
        return []
    problems: list[Problem] = []
    for collection, entity in _MANIFEST_ENTITIES:
        recorded: dict[str, int] = getattr(manifest, collection)
        persisted = state.events_persisted[collection]
        found: list[Problem] = []  # sorted by id below: only the few losses, not every entry
        for id_, expected in recorded.items():
            have = persisted.get(id_)
            if have is None:
                found.append(Problem(
                    entity, id_, f"LOST: the manifest records {expected} event(s) but {collection}:{id_} does not exist",
                ))
            elif have < expected:
                lost = expected - have
                found.append(Problem(
                    entity, id_, f"LOST {lost} event(s): the manifest records {expected}, Redis holds {have}",
                ))
        problems += sorted(found, key=lambda p: p.id)
    return problems


def check_acknowledged(state: PersistedState, acknowledged: dict[str, int], record: Path) -> list[Problem]:
    """
    Every order/position Redis holds fewer events of than this machine saw it acknowledge
    (`acknowledged`, read from `record`): Redis went back in time.
    """
    problems: list[Problem] = []
    for name, seen in sorted(acknowledged.items()):
        collection, _, id_ = name.partition(":")
        entity = dict(_MANIFEST_ENTITIES).get(collection)
        if entity is None:
            continue
        have = state.events_persisted[collection].get(id_)
        if have is None:
            problems.append(Problem(entity, id_, (
                f"WENT BACK: Redis holds no {collection}:{id_}, this machine saw {seen} event(s) acknowledged "
                f"(if retention on another machine deleted it, that machine's record is the current one: remove {record})"
            )))
        elif have < seen:
            problems.append(Problem(entity, id_, f"WENT BACK: Redis holds {have} event(s), this machine saw {seen} acknowledged"))
    return problems


class _LoadedDatabase(CacheDatabaseFacade):
    """
    A read-only CacheDatabaseFacade over already loaded objects, so NautilusTrader's Cache
    loads them exactly as it would from Redis (``cache_currencies`` ... ``cache_positions``).
    """

    def __init__(self, state: PersistedState) -> None:
        super().__init__()
        self._state = state

    def load_currencies(self) -> dict:
        return dict(self._state.currencies)

    def load_instruments(self) -> dict:
        return {i.id: i for i in self._state.instruments.values()}

    def load_synthetics(self) -> dict:
        return {}

    def load_accounts(self) -> dict:
        return {a.id: a for a in self._state.accounts.values()}

    def load_orders(self) -> dict:
        return {o.client_order_id: o for o in self._state.orders.values()}

    def load_positions(self) -> dict:
        return {p.id: p for p in self._state.positions.values()}

    def load_index_order_position(self) -> dict:
        from nautilus_trader.model.identifiers import ClientOrderId  # noqa: PLC0415
        from nautilus_trader.model.identifiers import PositionId  # noqa: PLC0415

        # Deferred (unbuilt) closed orders are not in this cache: their index entries wait for them too.
        return {ClientOrderId(k): PositionId(v) for k, v in self._state.order_position.items()
                if k not in self._state.deferred_orders}

    def load_index_order_client(self) -> dict:
        from nautilus_trader.model.identifiers import ClientId  # noqa: PLC0415
        from nautilus_trader.model.identifiers import ClientOrderId  # noqa: PLC0415

        return {ClientOrderId(k): ClientId(v) for k, v in self._state.order_client.items()
                if k not in self._state.deferred_orders}

    def index_order_position(self, client_order_id, position_id) -> None:
        return None  # read-only: Cache calls this while linking contingent orders


def nautilus_integrity_check(state: PersistedState) -> bool | None:
    """NautilusTrader's ``Cache.check_integrity()`` on the loaded objects (False also when it cannot run)."""
    try:
        cache = Cache(database=_LoadedDatabase(state))
        cache.cache_currencies()
        cache.cache_instruments()
        cache.cache_accounts()
        cache.cache_orders()
        cache.cache_order_lists()
        cache.cache_positions()
        cache.build_index()
        return bool(cache.check_integrity())
    except Exception as e:  # noqa: BLE001
        log.error("NautilusTrader integrity check could not run: %s: %s", type(e).__name__, e)
        return False
