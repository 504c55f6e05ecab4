"""
What the write path writes: typed commands and `Op`, one atomic facade write.

Commands
--------
An op's commands are either plain Redis commands - a tuple ``(b"NAME", *args)`` such as
``(b"SADD", key, member)``, sent as they are or coalesced (`launcher.cache.write.batch`) - or
one of the typed commands below, which the batch builder turns into Redis commands depending on
the send (first send: plain ``RPUSH``; resend or replay: the idempotent Lua scripts).

At rest (in an op and in a spill record) every command is a plain tuple of str/bytes/int,
because a retained op must be one object the cyclic GC tracks (see `Op`): a typed command is
stored as ``(code, *fields)`` (`Append.stored`, ...) and read back through its named view
(`view`). The codes ("A", "S", "D") are the spill file's format: files written by earlier
versions replay unchanged.

Lifecycle of a write
--------------------
Every durability promise is one transition of `Stage`::

    SUBMITTED     in the memory FIFO of this process         (lost if the process dies)
      -> SPILLED  in the fsync'd spill file                  (survives a crash of process or machine)
      -> APPLIED  its MULTI/EXEC reply was read from the master (survives a crash of this process)
      -> ACKNOWLEDGED  WAIT reported ``min_replica_acks`` replicas (survives a failover to one
                       of them); with ``min_replica_acks=0`` APPLIED is ACKNOWLEDGED

SPILLED is skipped unless memory reached ``max_pending_writes``, an outage lasts (at most one
buffer interval apart), Redis refused the writes for good, or Redis could not be reached at
close. A write is released only at ACKNOWLEDGED; before that it is retained and resent,
idempotently, whatever failed. An APPLIED write that WAIT did not acknowledge is kept in the
spill file (not memory) and resent after any reconnect. A sync caller returns at APPLIED (which
is ACKNOWLEDGED whenever the replicas answered within the WAIT timeout), or at SPILLED once
Redis refused the writes for good (see `launcher.cache.write.writer`).
"""

from __future__ import annotations

import enum
from typing import Any
from typing import NamedTuple

from launcher.cache.write.spill import encode_record


APPEND, SNAPSHOT, DELETE_EVENT = "A", "S", "D"  # codes of the typed commands at rest

# Writes whose entity is an account: NautilusTrader may purge account events from memory, so
# their lists are never rebuilt from the entity (only reported when gone altogether).
ACCOUNT_KINDS = frozenset({"add_account", "update_account"})


class Stage(enum.IntEnum):
    """How far a write got (see the module docstring); each value is one durability promise."""

    SUBMITTED = 0
    SPILLED = 1
    APPLIED = 2
    ACKNOWLEDGED = 3


_SUBMITTED = Stage.SUBMITTED  # bound once: `Op()` is on the hot path of every facade write


class Append(NamedTuple):
    """
    Append the entity's event number `n` (1-based; its event count) to its list and record `n`
    in the manifest hash field, atomically. ``create=1``: the list may be new (RPUSH); ``0``: an
    update, only to an existing list (RPUSHX). `payload` is None until the op's event is
    serialized (`Op.materialize`).
    """

    list_key: str
    manifest_key: str
    field: str
    n: int
    payload: bytes | None
    create: int

    @staticmethod
    def stored(list_key: str, manifest_key: str, field: str, n: int, payload: bytes | None, create: int) -> tuple:
        """The command at rest (no view object is built; the facade's event writes inline this tuple)."""
        return (APPEND, list_key, manifest_key, field, n, payload, create)


class Snapshot(NamedTuple):
    """Append a state snapshot to a list unless the same bytes are among its last entries."""

    list_key: str
    payload: bytes

    @staticmethod
    def stored(list_key: str, payload: bytes) -> tuple:
        return (SNAPSHOT, list_key, payload)


class DeleteEvent(NamedTuple):
    """
    Remove the account event `event_id` from the account's list and record the list's new
    length in the manifest field. `encoding` ("json"/"msgpack") is the payloads'. The batch
    builder sends the deletes of one account in one script call.
    """

    list_key: str
    manifest_key: str
    field: str
    event_id: str
    encoding: str

    @staticmethod
    def stored(list_key: str, manifest_key: str, field: str, event_id: str, encoding: str) -> tuple:
        return (DELETE_EVENT, list_key, manifest_key, field, event_id, encoding)


Typed = Append | Snapshot | DeleteEvent
_VIEWS: dict[Any, type] = {APPEND: Append, SNAPSHOT: Snapshot, DELETE_EVENT: DeleteEvent}


def view(cmd: tuple) -> Typed | None:
    """The typed command stored in `cmd`, or None when `cmd` is a plain Redis command."""
    kind = _VIEWS.get(cmd[0]) if type(cmd[0]) is str else None
    return None if kind is None else tuple.__new__(kind, cmd[1:])


class Lazy:
    """A payload serialized by the writer thread (immutable objects only: currencies, instruments)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


class Op:
    """
    One facade write: commands applied atomically, retained until acknowledged (`Stage`).

    A retained write is one object the cyclic GC tracks, however many commands it has: its
    commands are a tuple of tuples of str/bytes/int (which the GC stops tracking at its first
    pass), and the event still to serialize into its `Append` is held by the op itself
    (``event``; the append's payload is None until then). Ops outlive the young generations
    (they wait for the buffer interval and the round trip), so every tracked object per write
    is promoted to the oldest generation and makes full collections, which scan the node's
    whole heap, come sooner.

    ``seq``/``epoch`` number the submissions of one writer (epoch: random per process); ``t0``
    is the monotonic submission time in seconds.
    """

    __slots__ = ("seq", "kind", "cmds", "entity", "t0", "epoch", "lazy", "event", "stage")

    def __init__(self, kind: str, cmds: tuple | list, entity: Any = None, lazy: bool = False, event: Any = None) -> None:
        self.kind = kind
        self.cmds = cmds
        self.entity = entity  # the order/position/account whose events can repair a gap
        self.event = event  # serialized into the Append whose payload is None
        self.lazy = lazy or event is not None  # a payload is still to serialize (`event` or `Lazy` arguments)
        self.seq = 0
        self.t0 = 0.0
        self.epoch = b""
        self.stage = _SUBMITTED

    def materialize(self, serializer: Any) -> None:
        """Serialize the event and any `Lazy` arguments (idempotent)."""
        if not self.lazy:
            return
        # The writer thread and a spilling caller may both get here for one op: `event` is read
        # before `cmds` here and cleared after `cmds` is replaced below, so whoever sees no event
        # also sees the serialized commands.
        event = self.event
        cmds = self.cmds
        if event is not None:  # the facade's event writes (orders, positions, accounts)
            self.cmds = _with_payload(cmds, serializer.serialize(event))
        else:  # `Lazy` arguments (currencies, instruments, synthetics)
            self.cmds = tuple(
                tuple(serializer.serialize(a.obj) if type(a) is Lazy else a for a in cmd) if Lazy in map(type, cmd) else cmd
                for cmd in cmds
            )
        self.event = None
        self.lazy = False

    def drop(self) -> None:
        """Forget the commands (a payload that cannot be serialized: the writer counts it lost and stops trading)."""
        self.cmds, self.lazy, self.entity, self.event = (), False, None, None

    def record(self, serializer: Any) -> bytes:
        """The op as a spill record (serialized first: the writer materializes it beforehand, reporting a failure)."""
        self.materialize(serializer)
        return encode_record([self.epoch, self.seq, self.kind, self.cmds])

    @classmethod
    def from_record(cls, value: list) -> Op:
        """An op read back from the spill file (its commands as tuples again)."""
        epoch, seq, kind, cmds = value
        op = cls(kind, tuple(map(tuple, cmds)))
        op.epoch = epoch
        op.seq = seq
        op.stage = Stage.SPILLED
        return op


_PAYLOAD = 1 + Append._fields.index("payload")  # where an Append at rest holds its payload


def _with_payload(cmds: tuple | list, payload: bytes) -> tuple:
    """`cmds` with `payload` in the first `Append` that has none (usually the first command)."""
    for j, cmd in enumerate(cmds):
        if cmd[0] == APPEND and cmd[_PAYLOAD] is None:
            return (*cmds[:j], cmd[:_PAYLOAD] + (payload,) + cmd[_PAYLOAD + 1:], *cmds[j + 1:])
    return tuple(cmds)


def list_counts(ops: list[Op]) -> tuple[bool, dict[str, int]]:
    """
    The event count each list is left with once `ops` applied, in order: from their appends,
    rewrites (``DEL`` then ``RPUSH`` of all events) and deletes (0). The flag says a ``FLUSHDB``
    came first (the counts are those after the last one).
    """
    flushed = False
    counts: dict[str, int] = {}
    for op in ops:
        for cmd in op.cmds:
            name = cmd[0]
            if name == APPEND:
                counts[cmd[1]] = int(cmd[4])
            elif name == b"DEL":
                for key in cmd[1:]:
                    counts[key] = 0
            elif name == b"RPUSH":
                counts[cmd[1]] = len(cmd) - 2
            elif name == b"FLUSHDB":
                flushed, counts = True, {}
    return flushed, counts

