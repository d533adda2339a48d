--[[
  Reclaim jobs whose process has been silent for longer than the job's
  timeout: each goes back to the pending list with one retry fewer (keeping
  its resource), or to the failed list, releasing its resource
  (include/reclaim.lua, shared with reclaim_process.lua). The run that
  lost its lease is fenced by the lease check of complete/fail/give_back.
  Bounded: at most `limit` jobs per call. Right after Redis stalled (see
  include/observe_clock.lua) a periodic flush reclaims nothing until live
  processes had time to heartbeat; a forced one (an operator's) goes ahead.
  A job whose record vanished (eviction, a manual DEL) is forgotten, and a
  resource it held goes to the next job waiting for it (no output row). A
  job its process left a note on for this lease (note.lua) gets the note as
  its error text.
  Input:
    KEYS[1] procs    ZSET process id -> ms when its first job can turn stale
    KEYS[2] beats    HASH process id -> last heartbeat ms
    KEYS[3] pending  LIST of runnable job ids
    KEYS[4] locks    HASH resource id -> holding job id
    KEYS[5] counts   HASH "active", "waiting" counters
    KEYS[6] failed   LIST of failed job ids, oldest first
    KEYS[7] clock    HASH "seen", "grace_until" (see heartbeat.lua)
    KEYS[8] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    KEYS[9] delayed  ZSET job id -> ms it becomes runnable (a retry's back-off)
    KEYS[10] retry_policies  HASH task id -> "delay_ms backoff max_ms" (include/backoff.lua)
    KEYS[11] metrics  HASH per-task counters and histograms (include/metrics.lua)
    KEYS[12] history  HASH per-minute outcome counts (include/metrics.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, owned:<process id>,
            receipts:<process id>, cancels:<process id>
    ARGV[2] limit
    ARGV[3] stall ms, ARGV[4] grace ms (see heartbeat.lua)
    ARGV[5] "1": forced, ignore the grace after a stall
    ARGV[6] ms to keep an ended record (result_ttl), ARGV[7] at least when watched
            (include/ended.lua)
  Output: flat, 9 per reclaimed job: id, outcome ("retry", "delay": retried
          after a back-off, "fail" or "cancel"), task,
          resource, encoding, params, retries left, attempts, error
]]
local rcall = redis.call
local procs_key, beats_key, pending_key, locks_key, counts_key, failed_key, clock_key, held_key,
      delayed_key, policies_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local stall_ms, grace_ms, forced = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == "1"
-- @include now_ms
-- @include touch_process
-- @include observe_clock
-- @include release
-- @include ended
-- @include backoff
-- @include delay
-- @include metrics
-- @include reclaim

local now = now_ms()
local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key, failed = failed_key, delayed = delayed_key,
                policies = policies_key, keep = tonumber(ARGV[6]),
                grace = tonumber(ARGV[7]), now = now,
                metrics = open_metrics(KEYS[11], KEYS[12], now) }
local out, moved = {}, 0
if now < observe_clock(clock_key, now, stall_ms, grace_ms) and not forced then
  return out
end
local due = rcall("ZRANGEBYSCORE", procs_key, "-inf", now, "LIMIT", 0, limit)
for _, proc in ipairs(due) do
  local owned_key = prefix .. "owned:" .. proc
  local beat = tonumber(rcall("HGET", beats_key, proc)) or 0
  local silent = now - beat
  local stale = rcall("ZRANGEBYSCORE", owned_key, "-inf", "(" .. silent,
                      "WITHSCORES", "LIMIT", 0, limit - moved)
  for i = 1, #stale, 2 do
    local id, timeout = stale[i], tonumber(stale[i + 1])
    rcall("ZREM", owned_key, id)
    local why = string.format(
      "stale: process %s sent no heartbeat for %.1fs (task timeout %.1fs); it died or hung",
      proc, silent / 1000, timeout / 1000)
    if reclaim(queue, out, proc, id, why) then moved = moved + 1 end
  end
  touch_process(procs_key, beats_key, proc, owned_key, beat)
  if #stale > 0 and rcall("EXISTS", owned_key) == 0 then
    -- Declared dead with nothing left. Its receipts could only serve a hung
    -- process that wakes up: its re-sent finishes then report a lost lease
    -- where one had landed, never a second success.
    rcall("DEL", prefix .. "receipts:" .. proc, prefix .. "cancels:" .. proc)
  end
  if moved >= limit then break end
end
if moved > 0 then rcall("HINCRBY", counts_key, "active", -moved) end
queue.metrics.flush()
return out
