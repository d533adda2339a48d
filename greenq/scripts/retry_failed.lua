--[[
  Move failed jobs, oldest first, back to the queue through the same door as
  a submit: a job whose resource is held waits behind it. The job keeps the
  retries it has left (none, usually), so a new failure sends it back here.
  Bounded: at most `limit` jobs per call.
  Input:
    KEYS[1] failed   LIST of failed job ids, oldest first
    KEYS[2] pending  LIST of runnable job ids
    KEYS[3] locks    HASH resource id -> holding job id
    KEYS[4] counts   HASH "active", "waiting" counters
    KEYS[5] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>
    ARGV[2] limit
  Output: how many jobs were moved
]]
local rcall = redis.call
local failed_key, pending_key, locks_key, counts_key, held_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
-- @include release
-- @include enqueue
-- @include requeue

local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key }
local moved = 0
for _ = 1, limit do
  local id = rcall("LPOP", failed_key)
  if not id then break end
  if requeue(queue, id) then moved = moved + 1 end
end
return moved
