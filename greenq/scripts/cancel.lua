--[[
  Cancel one job, in O(log n) whatever the queue's length (no list is
  scanned). A job not started yet never runs: it ends "cancelled" at once
  and a resource it held goes to the next job waiting for it. Where its id
  sits in a list (pending, handoff, a resource's wait list), it stays there,
  marked: the fetch or release that comes to it skips it and lets its
  record expire then (include/bury.lua), so a cancelled id is never taken
  for a lost record. A delayed ("scheduled") job leaves the delayed set.
  A running job is only marked: its process learns of the cancel from the
  reply of its next heartbeat (heartbeat.lua) and stops the job; whatever
  finish comes then (complete, fail, or a stale flush) ends it "cancelled",
  fenced by the lease like any finish.
  Input:
    KEYS[1] locks    HASH resource id -> holding job id
    KEYS[2] counts   HASH "waiting", "skipped" (cancelled ids still in pending) counters
    KEYS[3] pending  LIST of runnable job ids
    KEYS[4] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    KEYS[5] delayed  ZSET job id -> ms it becomes runnable
    KEYS[6] metrics  HASH per-task counters and histograms (include/metrics.lua)
    KEYS[7] history  HASH per-minute outcome counts (include/metrics.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, cancels:<process id>
    ARGV[2] job id
    ARGV[3] ms to keep the ended record (result_ttl), ARGV[4] at least when watched
            (include/ended.lua)
  Output: 1 cancelled (or, for a running job, its cancel is under way);
          0 it had ended already, or there is no such job
]]
local rcall = redis.call
local locks_key, counts_key, pending_key, held_key, delayed_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, id = ARGV[1], ARGV[2]
-- @include now_ms
-- @include release
-- @include ended
-- @include metrics

local job_key = prefix .. "job:" .. id
local f = redis.pcall("HMGET", job_key, "state", "res", "owner", "watch", "cancel", "task")
if f.err or not f[1] then return 0 end
local state, resource, owner, watched = f[1], f[2], f[3], f[4]
local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key, keep = tonumber(ARGV[3]), grace = tonumber(ARGV[4]),
                now = now_ms() }

-- A running job is counted when its finish ends it; one not started, here.
local metrics = open_metrics(KEYS[6], KEYS[7], queue.now)
if state == "active" then
  if not f[5] then
    rcall("HSET", job_key, "cancel", 1)
    rcall("SADD", prefix .. "cancels:" .. owner, id)
  end
  return 1
elseif state == "scheduled" then
  rcall("ZREM", delayed_key, id)
  release(queue, resource, id)
  end_job(queue, id, job_key, "cancelled", watched, {})
  metrics.count(f[6], "cancelled")
  metrics.flush()
  return 1
elseif state == "waiting" or state == "pending" then
  -- Its id stays where it is; the record stays until a fetch or a release
  -- skips that id, and then lives `keep` ms more (include/bury.lua).
  end_in_place(queue, id, job_key, watched)
  if state == "waiting" then
    rcall("HINCRBY", counts_key, "waiting", -1)
  else
    rcall("HINCRBY", counts_key, "skipped", 1)
    release(queue, resource, id)
  end
  metrics.count(f[6], "cancelled")
  metrics.flush()
  return 1
end
return 0
