"""
The Lua scripts of the write path and their SHAs (``EVALSHA`` ids). A batch that uses one
loads all of them first (`PREAMBLE`), so a new master after a failover, or a server restarted
without its script cache, never answers NOSCRIPT inside EXEC.

`APPEND_SCRIPT` replies one of the codes below (APPENDED ... GAP_NO_LIST).
"""

from __future__ import annotations

import hashlib

from launcher.store.resp import pack_command


# KEYS: list, manifest hash. ARGV: field, n (1-based position of this event), payload,
# create (1: RPUSH semantics, 0: RPUSHX semantics), repairable (1: report a gap, don't write).
APPEND_SCRIPT = b"""
local n = tonumber(ARGV[2])
local len = redis.call('LLEN', KEYS[1])
if len == n - 1 and (len > 0 or ARGV[4] == '1') then
  redis.call('RPUSH', KEYS[1], ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[1], n)
  return 0
end
if len >= n and n >= 1 and redis.call('LINDEX', KEYS[1], n - 1) == ARGV[3] then
  redis.call('HSET', KEYS[2], ARGV[1], n)
  return 1
end
if len > 0 and redis.call('LPOS', KEYS[1], ARGV[3], 'RANK', -1, 'MAXLEN', 64) then
  redis.call('HSET', KEYS[2], ARGV[1], n)
  return 2
end
if len < n - 1 and ARGV[5] == '1' then
  return -1 - len
end
if len == 0 and ARGV[4] ~= '1' then
  return -1000000000
end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], n)
return 3
"""

# Snapshots have no event count: append unless the same bytes are among the last entries.
SNAPSHOT_SCRIPT = b"""
if redis.call('LPOS', KEYS[1], ARGV[1], 'RANK', -1, 'MAXLEN', 64) then
  return 1
end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 0
"""

# Removes account events by id, several at a time (the writer coalesces the deletes of one account
# within a batch into one call, see `launcher.cache.write.batch`): one pass over the list, then LTRIM of the
# removed events that are its head (retention: the oldest go), tombstones (LSET) + one LREM for
# the others (entry by entry LREM in the unlikely case that an entry equals the tombstone).
# Every entry whose decoded ``event_id`` is one of the ids goes (copies included); nothing else
# does. With canonical UUID ids (NautilusTrader's), only candidates are decoded: entries where
# some ``event_id`` key is followed (past separator bytes: msgpack's string header, JSON's
# ``":"``) by one of the ids - both serializers write the key and a UUID unescaped. Other ids:
# every entry is decoded. Idempotent (a resend finds nothing left to remove).
# KEYS: account list, manifest hash. ARGV: field, encoding ("json"/"msgpack"), event id, ...
DELETE_EVENT_SCRIPT = b"""
local UUID = '%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x'
local AFTER_KEY = '^[^%w%-]*(' .. UUID .. ')'
local TOMB = '\\255launcher:deleted-account-event\\255'
local want = {}
local uuids = true
for i = 3, #ARGV do
  local id = ARGV[i]
  want[id] = true
  if string.len(id) ~= 36 or not string.find(id, '^' .. UUID .. '$') then
    uuids = false
  end
end
local json = ARGV[2] == 'json'
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local gone = {}
local tomb_in_use = false
for i = 1, #items do
  local item = items[i]
  if item == TOMB then
    tomb_in_use = true
  end
  local candidate = not uuids
  local init = 1
  while uuids do
    local _, last = string.find(item, 'event_id', init, true)
    if not last then
      break
    end
    local id = string.match(item, AFTER_KEY, last + 1)
    if id and want[id] then
      candidate = true
      break
    end
    init = last + 1
  end
  if candidate then
    local ok, decoded
    if json then
      ok, decoded = pcall(cjson.decode, item)
    else
      ok, decoded = pcall(cmsgpack.unpack, item)
    end
    if ok and type(decoded) == 'table' and type(decoded['event_id']) == 'string' and want[decoded['event_id']] then
      gone[#gone + 1] = i
    end
  end
end
local removed = #gone
if removed == 0 then
  return 0
end
local head = 0
while head < removed and gone[head + 1] == head + 1 do
  head = head + 1
end
if tomb_in_use then
  for k = 1, removed do
    redis.call('LREM', KEYS[1], 1, items[gone[k]])
  end
else
  if head > 0 then
    redis.call('LTRIM', KEYS[1], head, -1)
  end
  if head < removed then
    for k = head + 1, removed do
      redis.call('LSET', KEYS[1], gone[k] - 1 - head, TOMB)
    end
    redis.call('LREM', KEYS[1], 0, TOMB)
  end
end
redis.call('HSET', KEYS[2], ARGV[1], redis.call('LLEN', KEYS[1]))
return removed
"""

APPEND_SHA = hashlib.sha1(APPEND_SCRIPT).hexdigest().encode()  # noqa: S324 (Redis script id)
SNAPSHOT_SHA = hashlib.sha1(SNAPSHOT_SCRIPT).hexdigest().encode()  # noqa: S324
DELETE_EVENT_SHA = hashlib.sha1(DELETE_EVENT_SCRIPT).hexdigest().encode()  # noqa: S324

GAP_NO_LIST = -1_000_000_000

# Replies of APPEND_SCRIPT: appended at position n, already there (a resend), found near the
# tail (a resend after the list moved), appended at the end although misplaced; a negative
# reply is a gap: -1 - the list's length, or GAP_NO_LIST when the list is gone (nothing written).
APPENDED, ALREADY_THERE, FOUND_NEAR_TAIL, APPENDED_MISPLACED = 0, 1, 2, 3

PREAMBLE = b"".join(
    pack_command((b"SCRIPT", b"LOAD", script)) for script in (APPEND_SCRIPT, SNAPSHOT_SCRIPT, DELETE_EVENT_SCRIPT)
)
PREAMBLE_REPLIES = 3
