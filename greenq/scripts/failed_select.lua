--[[
  Retry or delete the failed jobs that match a filter: given ids, a task id,
  or both (jobs matching both). retry_failed.lua and delete_failed.lua stay
  the fast path for "every failed job"; this script is for a selection.

  By ids (ARGV[4] "ids"): each id is taken off the failed list with
  LREM failed 1 <id>, and only when that removed it is it acted on, so an id
  that is not failed (unknown, pending, running, already retried) is left
  alone and counted 0. With a task id too, an id whose record names another
  task is left alone. Bounded by the ids passed (Broker.failed_select sends
  at most config.SCRIPT_BATCH per call).

  By task (ARGV[4] "walk"): walks `limit` slots of the failed list from
  `cursor` (LRANGE), acts on the ids whose record's task matches, overwrites
  their slots with LSET to a tombstone, then removes every tombstone with
  one LREM per call. Why the tombstone: LREM is O(N) in the list's length,
  so removing each matching id by value would cost O(N) per id, O(N * M)
  for M matches (25 million steps for 5,000 of 10,000 failed jobs); the
  tombstone costs O(N) once per chunk of `limit`. The caller loops, passing
  back the cursor returned, until done. Ids the walk removed lay before the
  cursor, so the next cursor is cursor + slots walked - ids removed. Jobs
  that fail meanwhile are appended at the end and are walked too; a
  concurrent retry or delete of the oldest failed jobs shifts the list, so
  the walk may skip some (run it again).

  The tombstone contains the byte 0xFF, which never occurs in UTF-8, and
  greenq refuses job ids that are not valid UTF-8: it cannot be a job id.
  Slots are overwritten and removed within this one call; none is ever
  left in the list.

  Retry is requeue() (include/requeue.lua), the same door as
  retry_failed.lua: a job whose resource is held waits behind the holder.
  Delete removes the record (DEL), as delete_failed.lua does.
  Input:
    KEYS[1] failed   LIST of failed job ids, oldest first
    KEYS[2] pending  LIST of runnable job ids
    KEYS[3] locks    HASH resource id -> holding job id
    KEYS[4] counts   HASH "active", "waiting" counters
    KEYS[5] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>
    ARGV[2] "retry" or "delete"
    ARGV[3] task id the job's record must name ("" = any task)
    ARGV[4] "ids" or "walk"
    ids:  ARGV[5..] job ids
    walk: ARGV[5] cursor (index in the failed list), ARGV[6] limit (slots walked)
  Output: {acted, next cursor, done (1: the walk reached the list's end)}. acted: jobs retried or
          deleted (a retry of an id whose record is gone drops the id and
          counts 0, as retry_failed.lua does; a delete counts it, as
          delete_failed.lua does). By ids: {acted, 0, 1}.
]]
local rcall = redis.call
local failed_key, pending_key, locks_key, counts_key, held_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, mode, task, how = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
-- @include release
-- @include enqueue
-- @include requeue

local TOMBSTONE = "\255greenq:failed_select"

if mode ~= "retry" and mode ~= "delete" then
  return redis.error_reply("failed_select: mode must be retry or delete, not " .. tostring(mode))
end
local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key }

-- Whether `id`'s record names the task asked for. pcall: a record that is
-- not a hash (written by hand) names no task.
local function matches(id)
  if task == "" then return true end
  return redis.pcall("HGET", prefix .. "job:" .. id, "task") == task
end

-- Retry or delete `id`, already off the failed list (or about to be).
local function act(id)
  if mode == "retry" then
    if requeue(queue, id) then return 1 end
    return 0
  end
  rcall("DEL", prefix .. "job:" .. id)
  return 1
end

local acted = 0
if how == "ids" then
  for i = 5, #ARGV do
    local id = ARGV[i]
    if matches(id) and rcall("LREM", failed_key, 1, id) == 1 then
      acted = acted + act(id)
    end
  end
  return {acted, 0, 1}
end
if how ~= "walk" then
  return redis.error_reply("failed_select: ARGV[4] must be ids or walk, not " .. tostring(how))
end

local cursor, limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local ids = rcall("LRANGE", failed_key, cursor, cursor + limit - 1)
local removed = 0
for i, id in ipairs(ids) do
  if matches(id) then
    rcall("LSET", failed_key, cursor + i - 1, TOMBSTONE)
    removed = removed + 1
    acted = acted + act(id)
  end
end
if removed > 0 then rcall("LREM", failed_key, 0, TOMBSTONE) end
local next_cursor = cursor + #ids - removed
local done = 0
if next_cursor >= rcall("LLEN", failed_key) then done = 1 end
return {acted, next_cursor, done}
