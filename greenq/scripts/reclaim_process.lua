--[[
  Reclaim every job one process holds, whatever its heartbeat says: its
  master saw it die, so waiting out the jobs' timeouts would only delay
  them. Each is retried or failed as flush_stale.lua does it (shared:
  include/reclaim.lua), and the process is forgotten, receipts included,
  once it holds nothing. A finish the dead process sent just before it died
  and that lands after this is fenced by the lease check of
  complete/fail/give_back, as after a flush. Bounded: at most `limit` jobs
  per call.
  Input:
    KEYS[1] procs    ZSET process id -> ms when its first job can turn stale
    KEYS[2] beats    HASH process id -> last heartbeat ms
    KEYS[3] pending  LIST of runnable job ids
    KEYS[4] locks    HASH resource id -> holding job id
    KEYS[5] counts   HASH "active", "waiting" counters
    KEYS[6] failed   LIST of failed job ids, oldest first
    KEYS[7] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    KEYS[8] delayed  ZSET job id -> ms it becomes runnable (a retry's back-off)
    KEYS[9] retry_policies  HASH task id -> "delay_ms backoff max_ms" (include/backoff.lua)
    KEYS[10] metrics  HASH per-task counters and histograms (include/metrics.lua)
    KEYS[11] history  HASH per-minute outcome counts (include/metrics.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, owned:<process id>,
            receipts:<process id>, cancels:<process id>
    ARGV[2] process id
    ARGV[3] error text of the reclaimed jobs (a note left for the lease wins, see note.lua)
    ARGV[4] limit
    ARGV[5] ms to keep an ended record (result_ttl), ARGV[6] at least when watched
            (include/ended.lua)
  Output: { rows, left }: rows flat, 9 per reclaimed job as in flush_stale.lua;
          left: how many jobs the process still holds (call again while > 0)
]]
local rcall = redis.call
local procs_key, beats_key, pending_key, locks_key, counts_key, failed_key, held_key,
      delayed_key, policies_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local prefix, proc, why, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
-- @include now_ms
-- @include touch_process
-- @include release
-- @include ended
-- @include backoff
-- @include delay
-- @include metrics
-- @include reclaim

local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key, failed = failed_key, delayed = delayed_key,
                policies = policies_key, keep = tonumber(ARGV[5]),
                grace = tonumber(ARGV[6]), now = now_ms() }
queue.metrics = open_metrics(KEYS[10], KEYS[11], queue.now)
local owned_key = prefix .. "owned:" .. proc
local out, moved = {}, 0
for _, id in ipairs(rcall("ZRANGE", owned_key, 0, limit - 1)) do
  rcall("ZREM", owned_key, id)
  if reclaim(queue, out, proc, id, why) then moved = moved + 1 end
end
if moved > 0 then rcall("HINCRBY", counts_key, "active", -moved) end
queue.metrics.flush()
touch_process(procs_key, beats_key, proc, owned_key, tonumber(rcall("HGET", beats_key, proc)) or 0)
local left = rcall("ZCARD", owned_key)
if left == 0 then rcall("DEL", prefix .. "receipts:" .. proc, prefix .. "cancels:" .. proc) end
return { out, left }
