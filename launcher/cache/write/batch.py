"""
The batch builder: ops -> one ``MULTI ... EXEC`` (+ ``WAIT``) in RESP, and its replies -> ops.

Pure: no threads, sockets or servers; payloads must already be serialized (`Op.materialize`).

First send or guarded send
    The first send of writes made by this process cannot find any of its appends already
    applied, so an `Append` becomes plain ``RPUSH``/``RPUSHX`` (as the native adapter) + its
    manifest ``HSET``, and the reply (the list's new length) is checked by the writer. A guarded
    send (a resend, a replay of spilled writes, a repair) uses the idempotent scripts instead.

Coalescing (neither rewrite changes what any reader can observe: nobody sees inside one
MULTI/EXEC, and the replies of the rewritten commands are not inspected)
    * Assignments to set members / hash fields / strings (single-member SADD/SREM,
      single-field HSET/HDEL, plain SET, and the manifest HSET of each first-send append) are
      gathered per key into a run (`_Run`) and sent as its net effect: the last assignment of
      each member, as one variadic command per kind (SADD, SREM, HSET, HDEL, SET). A run ends,
      and is sent, just before any command that may observe or change its key otherwise (a
      list op, a script, DEL, a command of another family on the key; FLUSHDB or any command
      whose keys are unknown ends every run), or before EXEC. Moving an assignment later to
      that point changes nothing, since no command in between touches its key. List appends
      are all kept, in order. (A batch of order updates sends one SADD/SREM per index set and
      one manifest HSET instead of ~6 commands each.)
    * Deletes of account events are coalesced per account (list key) into the call of the
      first one. A group closes at any other command that may touch its list or manifest field
      (or whose keys are unknown, e.g. FLUSHDB): the ids join a call moved earlier only past
      commands on other keys, which commute with it. Runs on the list or manifest are sent
      before a group's call, since a delete ends them.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import hiredis
from hiredis import pack_command as _pack_tuple

from launcher.cache.write.commands import ACCOUNT_KINDS
from launcher.cache.write.commands import APPEND
from launcher.cache.write.commands import DELETE_EVENT
from launcher.cache.write.commands import Append
from launcher.cache.write.commands import DeleteEvent
from launcher.cache.write.commands import Op
from launcher.cache.write.commands import Snapshot
from launcher.cache.write.commands import view
from launcher.cache.write.scripts import APPEND_SHA
from launcher.cache.write.scripts import DELETE_EVENT_SHA
from launcher.cache.write.scripts import PREAMBLE
from launcher.cache.write.scripts import PREAMBLE_REPLIES
from launcher.cache.write.scripts import SNAPSHOT_SHA
from launcher.store.resp import pack_command


_MULTI = pack_command((b"MULTI",))
_EXEC = pack_command((b"EXEC",))

# Plain commands of the facade whose keys are all of their arguments after the name (DEL) or
# only the first one (the rest are members/fields/values).
_KEYS_ONLY = frozenset({b"DEL", b"UNLINK"})
_FIRST_KEY = frozenset({b"SET", b"SADD", b"SREM", b"HSET", b"HDEL", b"RPUSH", b"RPUSHX", b"LPUSH"})

# Assignments that can be coalesced: command -> family, for exactly this many arguments (one
# member/field; SET without options).
_SET_FAMILY, _HASH, _STRING = object(), object(), object()
_ASSIGNMENTS = {b"SADD": (_SET_FAMILY, 3), b"SREM": (_SET_FAMILY, 3), b"HSET": (_HASH, 4), b"HDEL": (_HASH, 3),
                b"SET": (_STRING, 3)}
_HDEL = object()  # a hash field's last assignment was a delete

# Where an `Append` at rest holds its fields: the first-send loop reads them in place, since
# building its named view would cost more than the rest of packing the append.
_LIST, _MANIFEST, _FIELD, _N, _PAYLOAD, _CREATE = (1 + Append._fields.index(f) for f in (
    "list_key", "manifest_key", "field", "n", "payload", "create"))


class Packed(NamedTuple):
    """
    One batch in RESP. `index` names the (op, command) of every queued command in order; the
    command is -1 for a coalesced run's command (named after the last op that assigned).
    """

    data: bytes
    commands: int  # commands queued between MULTI and EXEC
    index: list[tuple[int, int]]
    preamble: int  # replies before MULTI (the SCRIPT LOADs)
    waits: bool  # ends with WAIT
    coalesced: int  # assignment commands not sent (superseded, or merged into a variadic one)

    @property
    def replies(self) -> int:
        """Replies the batch gets: preamble, MULTI, one per queued command, EXEC (, WAIT)."""
        return self.preamble + 1 + self.commands + 1 + self.waits


class Replies(NamedTuple):
    """The replies of a `Packed` batch, by role."""

    setup: list  # SCRIPT LOADs and MULTI: an error here means the batch cannot be applied
    queued: list  # QUEUED (or an error) per command
    results: Any  # EXEC's reply: one result per command, or an error (nothing applied)
    wait: Any  # WAIT's reply (replicas acknowledged), None when not asked


def split(packed: Packed, replies: list) -> Replies:
    """`replies` (exactly `packed.replies` of them) by role."""
    start = packed.preamble + 1
    end = start + packed.commands
    return Replies(replies[:start], replies[start:end], replies[end], replies[-1] if packed.waits else None)


def build(ops: list[Op], guarded: bool, wait: tuple[int, int] | None = None) -> Packed:
    """
    `ops` as one batch: first-send appends (``guarded=False``) or the idempotent scripts
    (``guarded=True``); `wait` = (replicas, timeout in ms) appends ``WAIT``.
    """
    builder = _Builder(guarded)
    builder.add(ops)
    return builder.finish(wait)


def queued_commands(packed: Packed) -> list[list[bytes]]:
    """
    The commands queued between MULTI and EXEC, parsed back from the batch's RESP (a request
    is a RESP array, which the reply parser reads as well); only to name a refused command.
    """
    reader = hiredis.Reader()
    reader.feed(packed.data)
    commands = [reader.gets() for _ in range(packed.preamble + 1 + packed.commands)]
    return commands[packed.preamble + 1:]


def appends_by_op(ops: list[Op], packed: Packed, results: list) -> tuple[list, list[tuple[int, Exception]]]:
    """
    Per op, the (command index, reply) of its appends (None: it has none), and the (op index,
    error) of every command Redis rejected inside EXEC.
    """
    per_op: list = [None] * len(ops)
    rejected: list[tuple[int, Exception]] = []
    errors = any(issubclass(t, Exception) for t in set(map(type, results)))  # one C pass
    for (i, j), result in zip(packed.index, results):
        if errors and isinstance(result, Exception):
            rejected.append((i, result))
            continue
        if j >= 0 and ops[i].cmds[j][0] == APPEND:
            found = per_op[i]
            if found is None:
                per_op[i] = [(j, result)]
            else:
                found.append((j, result))
    return per_op, rejected


def _text(key: Any) -> str:
    return key.decode("utf-8", "surrogateescape") if isinstance(key, (bytes, bytearray, memoryview)) else str(key)


def _footprint(cmd: tuple, typed: Any) -> tuple[tuple, tuple] | None:
    """
    (keys `cmd` may observe or change as a whole, (hash, field) pairs it assigns), or None when
    its keys are not known here (FLUSHDB...). `typed` is its `view`.
    """
    if typed is not None:
        if type(typed) is Snapshot:
            return (typed.list_key,), ()
        return (typed.list_key,), ((typed.manifest_key, typed.field),)  # script or RPUSH + manifest HSET
    name = cmd[0]
    if name in _KEYS_ONLY:
        return cmd[1:], ()
    if name in _FIRST_KEY:
        return cmd[1:2], ()
    return None


class _Run:
    """
    The assignments of one batch to one key (one family) since the last command that may
    observe or change that key otherwise: the last value of each member/field, in first-seen
    order. Members are compared as text (a str and the bytes of the same text are one Redis
    member); the spelling first seen is the one sent.
    """

    __slots__ = ("family", "key", "members", "spelling", "op")

    def __init__(self, family: object, key: Any) -> None:
        self.family = family
        self.key = key
        self.members: dict[Any, Any] = {}  # member text -> True/False (SADD/SREM), value or _HDEL, SET value
        self.spelling: dict[str, Any] | None = None  # member text -> the bytes first seen, when not str
        self.op = 0  # index of the last op that assigned (named when Redis rejects the command)

    def commands(self) -> list[tuple]:
        """The run's net effect: one variadic command per kind of assignment (they commute)."""
        key, members, spelling = self.key, self.members, self.spelling
        if self.family is _STRING:
            return [(b"SET", key, members[None])]
        if spelling is not None:
            members = {spelling.get(m, m): v for m, v in members.items()}
        if self.family is _SET_FAMILY:
            added = [m for m, v in members.items() if v]
            removed = [m for m, v in members.items() if not v]
            return ([(b"SADD", key, *added)] if added else []) + ([(b"SREM", key, *removed)] if removed else [])
        assigned = [x for f, v in members.items() if v is not _HDEL for x in (f, v)]
        deleted = [f for f, v in members.items() if v is _HDEL]
        return ([(b"HSET", key, *assigned)] if assigned else []) + ([(b"HDEL", key, *deleted)] if deleted else [])


class _DeleteGroup(NamedTuple):
    """Account-event deletes sent as one script call at `slot` of the batch's parts."""

    slot: int
    target: tuple  # (list key, manifest key, field, encoding)
    ids: list


class _Builder:
    """The state of one batch being built (see the module docstring)."""

    def __init__(self, guarded: bool) -> None:
        self.guarded = guarded
        self.parts = [b"", _MULTI]  # the SCRIPT LOAD preamble goes first when a script is used
        self.index: list[tuple[int, int]] = []
        self.runs: dict[str, _Run] = {}  # key text -> its open run
        self.deletes: dict[Any, _DeleteGroup] = {}  # list key -> its open group
        self.groups: list[_DeleteGroup] = []
        self.scripts = False
        self.assigned = 0  # assignments seen (coalescible commands and first-send manifest HSETs)

    def add(self, ops: list[Op]) -> None:
        """Every command of `ops`, in order (the hot loop: common cases inline, names bound locally)."""
        runs, parts_append, index_append = self.runs, self.parts.append, self.index.append
        assignments_get, guarded = _ASSIGNMENTS.get, self.guarded
        assigned = 0
        for i, op in enumerate(ops):
            for j, cmd in enumerate(op.cmds):
                name = cmd[0]
                if self.deletes and name != DELETE_EVENT:
                    self._close_delete_groups(cmd, view(cmd))
                assignment = assignments_get(name)  # typed commands' str codes are never assignments
                if assignment is not None and len(cmd) == assignment[1]:
                    assigned += 1
                    family = assignment[0]
                    if family is _SET_FAMILY:
                        member, value = cmd[2], name == b"SADD"
                    elif family is _HASH:
                        member, value = cmd[2], cmd[3] if name == b"HSET" else _HDEL
                    else:
                        member, value = None, cmd[2]
                    key = cmd[1]
                    run = runs.get(key) if type(key) is str else None
                    if run is not None and run.family is family and (type(member) is str or member is None):
                        run.members[member] = value  # the common case: an open run, str names
                        run.op = i
                    else:
                        self._assign(i, family, key, member, value)
                    continue
                if name == APPEND and not guarded:
                    # RPUSH/RPUSHX (touches the list), then the manifest HSET: an assignment.
                    list_key, key, field, n = cmd[_LIST], cmd[_MANIFEST], cmd[_FIELD], cmd[_N]
                    if runs:
                        run = runs.pop(list_key if type(list_key) is str else _text(list_key), None)
                        if run is not None:
                            self._send_run(run)
                    parts_append(_pack_tuple((b"RPUSH" if cmd[_CREATE] else b"RPUSHX", list_key, cmd[_PAYLOAD])))
                    index_append((i, j))
                    assigned += 1
                    run = runs.get(key) if type(key) is str else None
                    if run is not None and run.family is _HASH and type(field) is str:
                        run.members[field] = n
                        run.op = i
                    else:
                        self._assign(i, _HASH, key, field, n)
                    continue
                typed = view(cmd) if type(name) is str else None  # plain commands are named by bytes
                if runs:
                    self._end_runs(_footprint(cmd, typed))
                if typed is None:
                    parts_append(_pack_tuple(cmd) if type(cmd) is tuple else pack_command(cmd))
                elif not self._script(i, op, typed):
                    continue  # rides on an earlier delete call (one reply, mapped to that op)
                index_append((i, j))
        self.assigned += assigned

    def _script(self, i: int, op: Op, cmd: Any) -> bool:
        """Queue a guarded typed command; False when it joined an open delete group instead."""
        self.scripts = True
        if type(cmd) is Append:
            # A gap in a list the entity can rebuild is reported (not written) and repaired.
            repairable = b"1" if op.entity is not None and op.kind not in ACCOUNT_KINDS else b"0"
            self.parts.append(pack_command((b"EVALSHA", APPEND_SHA, b"2", cmd.list_key, cmd.manifest_key, cmd.field,
                                            cmd.n, cmd.payload, cmd.create, repairable)))
        elif type(cmd) is Snapshot:
            self.parts.append(pack_command((b"EVALSHA", SNAPSHOT_SHA, b"1", cmd.list_key, cmd.payload)))
        else:
            return self._delete_event(cmd)
        return True

    def _delete_event(self, cmd: DeleteEvent) -> bool:
        target = (cmd.list_key, cmd.manifest_key, cmd.field, cmd.encoding)
        group = self.deletes.get(cmd.list_key)
        if group is not None and group.target == target:
            group.ids.append(cmd.event_id)
            return False
        if group is not None or any(g.target[1:3] == target[1:3] for g in self.deletes.values()):
            self._close_delete_groups(cmd, cmd)
        group = _DeleteGroup(len(self.parts), target, [cmd.event_id])
        self.deletes[cmd.list_key] = group
        self.groups.append(group)
        self.parts.append(b"")  # packed once the group is complete
        return True

    def _close_delete_groups(self, cmd: tuple, typed: Any) -> None:
        """Close the open account-event delete groups that `cmd` may not commute with."""
        footprint = _footprint(cmd, typed)
        if footprint is None:
            self.deletes.clear()
            return
        touched, fields = footprint
        for key in [k for k, g in self.deletes.items()
                    if g.target[0] in touched or g.target[1] in touched or (g.target[1], g.target[2]) in fields]:
            del self.deletes[key]

    def _assign(self, i: int, family: object, key: Any, member: Any, value: Any) -> None:
        text = key if type(key) is str else _text(key)
        run = self.runs.get(text)
        if run is None or run.family is not family:
            if run is not None:
                self._send_run(run)
            run = self.runs[text] = _Run(family, key)
        if type(member) is not str and member is not None:
            spelled, member = member, _text(member)
            if run.spelling is None:
                run.spelling = {}
            run.spelling.setdefault(member, spelled)
        run.members[member] = value
        run.op = i

    def _end_runs(self, footprint: tuple[tuple, tuple] | None) -> None:
        """Send the open runs on the keys of `footprint` (all of them when its keys are unknown)."""
        if footprint is None:
            for run in self.runs.values():
                self._send_run(run)
            self.runs.clear()
            return
        keys, fields = footprint
        for key in (*keys, *(hash_key for hash_key, _ in fields)):
            run = self.runs.pop(key if type(key) is str else _text(key), None)
            if run is not None:
                self._send_run(run)

    def _send_run(self, run: _Run) -> None:
        for command in run.commands():
            self.parts.append(_pack_tuple(command))
            self.index.append((run.op, -1))

    def finish(self, wait: tuple[int, int] | None) -> Packed:
        parts = self.parts
        for run in self.runs.values():
            self._send_run(run)
        for group in self.groups:
            key, manifest, field, encoding = group.target
            parts[group.slot] = pack_command((b"EVALSHA", DELETE_EVENT_SHA, b"2", key, manifest, field, encoding,
                                              *group.ids))
        parts.append(_EXEC)
        if wait is not None:
            parts.append(pack_command((b"WAIT", *wait)))
        if self.scripts:
            # Loaded on every batch that uses one (see `launcher.cache.write.scripts`).
            parts[0] = PREAMBLE
        coalesced = self.assigned - sum(1 for _, j in self.index if j < 0)
        return Packed(b"".join(parts), len(self.index), self.index, PREAMBLE_REPLIES if self.scripts else 0,
                      wait is not None, coalesced)
