"""
The pure batch builder (``launcher.cache.write.batch``): what one batch of ops sends, in which
order, and how its replies map back to the ops - without a server. (Whether a batch leaves what
every command alone leaves on a real server is tests/test_cache_coalesce.py.)
"""

from __future__ import annotations

import hiredis
import msgspec
import redis

from launcher.cache.write.batch import appends_by_op
from launcher.cache.write.batch import build
from launcher.cache.write.batch import split
from launcher.cache.write.commands import Append
from launcher.cache.write.commands import DeleteEvent
from launcher.cache.write.commands import Op
from launcher.cache.write.commands import Snapshot
from launcher.cache.write.commands import Stage
from launcher.cache.write.commands import view
from launcher.cache.write.scripts import APPEND_SHA
from launcher.cache.write.scripts import DELETE_EVENT_SHA
from launcher.cache.write.scripts import PREAMBLE_REPLIES
from launcher.cache.write.scripts import SNAPSHOT_SHA


def _commands(data: bytes) -> list[list[bytes]]:
    """The commands in `data` (RESP arrays of bulk strings), in order."""
    reader = hiredis.Reader()
    reader.feed(data)
    out = []
    while (command := reader.gets()) is not False:
        out.append(command)
    return out


def _queued(data: bytes) -> list[list[bytes]]:
    """The commands between MULTI and EXEC."""
    commands = _commands(data)
    start = commands.index([b"MULTI"])
    return commands[start + 1 : commands.index([b"EXEC"])]


def test_a_first_send_pushes_and_sets_the_manifest_in_one_command():
    ops = [Op("add_order", (Append.stored("o:1", "mf", "1", 1, b"e1", 1), (b"SADD", "idx", "1"))),
           Op("update_order", (Append.stored("o:1", "mf", "1", 2, b"e2", 0), (b"SREM", "idx", "1"))),
           Op("add_order", (Append.stored("o:2", "mf", "2", 1, b"f1", 1),))]
    packed = build(ops, guarded=False)
    assert _queued(packed.data) == [
        [b"RPUSH", b"o:1", b"e1"],
        [b"RPUSHX", b"o:1", b"e2"],
        [b"RPUSH", b"o:2", b"f1"],
        [b"HSET", b"mf", b"1", b"2", b"2", b"1"],  # the last count of every order, in first-seen order
        [b"SREM", b"idx", b"1"],  # SADD then SREM of one member: only the last assignment
    ]
    assert packed.preamble == 0 and not packed.waits  # no script, no WAIT
    assert packed.commands == 5 and packed.replies == 1 + 5 + 1
    assert packed.index == [(0, 0), (1, 0), (2, 0), (2, -1), (1, -1)]  # a run is named after its last op
    assert packed.coalesced == 5 - 2  # 3 manifest assignments + 2 index assignments -> 2 commands


def test_a_guarded_send_uses_the_scripts_and_loads_them_first():
    order = object()  # an entity: its gaps are reported, not written (repairable)
    ops = [Op("update_order", (Append.stored("o:1", "mf", "1", 2, b"e2", 0),), order),
           Op("update_account", (Append.stored("a:1", "mfa", "1", 5, b"x", 0),), order),
           Op("snapshot_order_state", (Snapshot.stored("snap:1", b"s"),))]
    packed = build(ops, guarded=True)
    commands = _commands(packed.data)
    assert [c[:3] for c in commands[:PREAMBLE_REPLIES]] == [[b"SCRIPT", b"LOAD", commands[i][2]] for i in range(3)]
    assert _queued(packed.data) == [
        [b"EVALSHA", APPEND_SHA, b"2", b"o:1", b"mf", b"1", b"2", b"e2", b"0", b"1"],
        [b"EVALSHA", APPEND_SHA, b"2", b"a:1", b"mfa", b"1", b"5", b"x", b"0", b"0"],  # accounts: never a gap report
        [b"EVALSHA", SNAPSHOT_SHA, b"1", b"snap:1", b"s"],
    ]
    assert packed.preamble == PREAMBLE_REPLIES and packed.replies == PREAMBLE_REPLIES + 1 + 3 + 1


def test_a_run_is_sent_before_a_command_that_sees_its_key_otherwise():
    ops = [Op("t", ((b"SADD", "s", "a"), (b"SADD", b"s", "b"), (b"DEL", "s"), (b"SADD", "s", "c"))),
           Op("t", ((b"HSET", "h", "f", "1"), (b"FLUSHDB",), (b"HSET", "h", b"f", "2"), (b"HDEL", "h", "f")))]
    assert _queued(build(ops, guarded=False).data) == [
        [b"SADD", b"s", b"a", b"b"],  # str and bytes spellings of one key are one run
        [b"DEL", b"s"],
        [b"SADD", b"s", b"c"],  # unknown keys: every run ends before FLUSHDB
        [b"HSET", b"h", b"f", b"1"],
        [b"FLUSHDB"],
        [b"HDEL", b"h", b"f"],  # str and bytes spellings of one field are one member
    ]


def test_deletes_of_one_account_share_a_script_call_until_its_list_is_touched():
    ops = [Op("delete_account_event", (DeleteEvent.stored("a:1", "mfa", "1", "id-1", "json"),)),
           Op("t", ((b"SADD", "other", "x"),)),
           Op("delete_account_event", (DeleteEvent.stored("a:1", "mfa", "1", "id-2", "json"),)),
           Op("update_account", (Append.stored("a:1", "mfa", "1", 3, b"e", 0),)),
           Op("delete_account_event", (DeleteEvent.stored("a:1", "mfa", "1", "id-3", "json"),))]
    packed = build(ops, guarded=True)
    assert _queued(packed.data) == [
        [b"EVALSHA", DELETE_EVENT_SHA, b"2", b"a:1", b"mfa", b"1", b"json", b"id-1", b"id-2"],
        [b"EVALSHA", APPEND_SHA, b"2", b"a:1", b"mfa", b"1", b"3", b"e", b"0", b"0"],
        [b"EVALSHA", DELETE_EVENT_SHA, b"2", b"a:1", b"mfa", b"1", b"json", b"id-3"],
        [b"SADD", b"other", b"x"],  # a run on another key, open until EXEC
    ]
    assert [i for i, _ in packed.index] == [0, 3, 4, 1]  # the second delete rides on the first's call


def test_wait_ends_the_batch_and_replies_split_by_role():
    ops = [Op("t", ((b"SET", "k", "v"),)), Op("t", (Snapshot.stored("snap", b"s"),))]
    packed = build(ops, guarded=True, wait=(2, 500))
    assert _commands(packed.data)[-1] == [b"WAIT", b"2", b"500"]
    assert packed.waits and packed.replies == PREAMBLE_REPLIES + 1 + 2 + 1 + 1
    replies = [b"sha"] * PREAMBLE_REPLIES + [b"OK", b"QUEUED", b"QUEUED", [b"OK", 0], 2]
    parts = split(packed, replies)
    assert parts.setup == [b"sha"] * PREAMBLE_REPLIES + [b"OK"]
    assert parts.queued == [b"QUEUED", b"QUEUED"]
    assert parts.results == [b"OK", 0]
    assert parts.wait == 2
    assert split(build(ops, guarded=True), replies[:-1]).wait is None


def test_replies_map_back_to_the_appends_of_each_op_and_name_rejected_commands():
    ops = [Op("t", (Append.stored("l:1", "mf", "1", 1, b"a", 1), (b"SADD", "s", "1"))),
           Op("t", ((b"SET", "k", "v"),)),
           Op("t", (Append.stored("l:2", "mf", "2", 4, b"b", 0),))]
    packed = build(ops, guarded=False)
    assert packed.index == [(0, 0), (2, 0), (2, -1), (0, -1), (1, -1)]  # RPUSH, RPUSHX, manifest, SADD, SET
    error = redis.exceptions.ResponseError("WRONGTYPE")
    appends, rejected = appends_by_op(ops, packed, [1, 3, 2, error, b"OK"])
    assert appends == [[(0, 1)], None, [(0, 3)]]
    assert rejected == [(0, error)]
    assert view(ops[2].cmds[appends[2][0][0]]).n == 4  # the reply 3 is checked against this count


def test_typed_commands_at_rest_are_plain_data_and_read_back_by_name():
    stored = Append.stored("l", "m", "f", 7, None, 0)
    assert type(stored) is tuple and all(type(x) in (str, int, type(None)) for x in stored)
    assert view(stored) == Append(list_key="l", manifest_key="m", field="f", n=7, payload=None, create=0)
    assert view(DeleteEvent.stored("l", "m", "f", "id", "json")).event_id == "id"
    assert view((b"SADD", "s", "m")) is None  # a plain Redis command


def test_an_event_is_serialized_into_its_append_once():
    class Serializer:
        calls = 0

        def serialize(self, obj):
            Serializer.calls += 1
            return f"<{obj}>".encode()

    op = Op("update_order", ((b"SADD", "s", "1"), Append.stored("l", "m", "f", 2, None, 0)), event="e2")
    assert op.lazy
    op.materialize(Serializer())
    op.materialize(Serializer())
    assert Serializer.calls == 1 and not op.lazy
    assert op.cmds == ((b"SADD", "s", "1"), Append.stored("l", "m", "f", 2, b"<e2>", 0))


def test_a_write_read_back_from_the_spill_file_is_spilled_and_plain_data_again():
    op = Op("update_order", (Append.stored("l", "m", "f", 2, b"e", 0), (b"SADD", "s", "1")))
    op.epoch, op.seq = b"e" * 8, 7
    record = op.record(serializer=None)
    value = msgspec.msgpack.decode(record[8:])  # after the record's length and CRC
    back = Op.from_record(value)
    assert back.stage is Stage.SPILLED and (back.epoch, back.seq, back.kind) == (op.epoch, 7, "update_order")
    assert back.cmds == op.cmds and all(type(cmd) is tuple for cmd in back.cmds)
