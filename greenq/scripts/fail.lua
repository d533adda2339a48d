--[[
  Record failed runs. A job with retries left is retried with one retry
  fewer and keeps its resource (so the next job of that resource cannot
  overtake it): at the back of the pending list, or, when its group gives a
  wait (its task's retry back-off, drawn by the committer), in the delayed
  set as "scheduled" until then (Redis' clock), from where fetch.lua makes
  it runnable; otherwise it ends "failed" in the
  failed list and its resource goes to the next waiting job. A job that a
  cancel reached (cancel.lua marked it, or the run ended by JobCancelled)
  ends "cancelled" instead, whatever its retries. Lease-checked like
  complete.lua.
  Input:
    KEYS[1] pending  LIST of runnable job ids
    KEYS[2] locks    HASH resource id -> holding job id
    KEYS[3] counts   HASH "active", "waiting" counters
    KEYS[4] failed   LIST of failed job ids, oldest first
    KEYS[5] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    KEYS[6] delayed  ZSET job id -> ms it becomes runnable
    KEYS[7] metrics  HASH per-task counters and histograms (include/metrics.lua)
    KEYS[8] history  HASH per-minute outcome counts (include/metrics.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, owned:<process id>,
            cancels:<process id>
    ARGV[2] process id
    ARGV[3] "1": drop this process' earlier receipts first (include/receipts.lua)
    ARGV[4] ms to keep an ended record (result_ttl), ARGV[5] at least when watched
            (include/ended.lua)
    ARGV[6..] groups of 6: job id, lease token, error text, how: "0" retry if
              retries are left, "1" final (no retry whatever is left, e.g. an
              undecodable record), "c" cancelled (the run ended by JobCancelled),
              ms a retry waits (0: at once), microseconds perform ran ("": not
              known)
  Output: one code per job: 2 retried (now or after its wait); 1 failed (now, or by an earlier send
          of this finish); 4 cancelled; 0 no record (its resource, if others
          wait for it, is passed on); -1 lease lost
]]
local rcall = redis.call
local pending_key, locks_key, counts_key, failed_key, held_key, delayed_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, proc = ARGV[1], ARGV[2]
-- @include now_ms
-- @include check_lease
-- @include release
-- @include receipts
-- @include ended
-- @include delay
-- @include metrics

local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key, delayed = delayed_key, keep = tonumber(ARGV[4]),
                grace = tonumber(ARGV[5]), now = now_ms() }
local receipts = open_receipts(prefix, proc)
local metrics = open_metrics(KEYS[7], KEYS[8], queue.now)
local owned_key = prefix .. "owned:" .. proc
local codes, ended = {}, 0
receipts.drop(ARGV[3])
for i = 6, #ARGV, 6 do
  local id, token, error_text, how = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local wait = tonumber(ARGV[i + 4]) or 0
  local job_key = prefix .. "job:" .. id
  local f, code = receipts.check(job_key, id, token)
  if f then
    rcall("ZREM", owned_key, id)
    ended = ended + 1
    local retries = tonumber(f[5]) or 0
    local task = f[8]
    metrics.observe(task, "d", tonumber(ARGV[i + 5]))
    metrics.observe_wait(task, f[9], f[10])
    if f[6] or how == "c" then
      metrics.count(task, "cancelled")
      rcall("SREM", prefix .. "cancels:" .. proc, id)
      release(queue, f[4], id)
      end_job(queue, id, job_key, "cancelled", f[7], {})
      code = 4
    elseif retries > 0 and how == "0" then
      rcall("HDEL", job_key, "unknown_since")  -- a run of a worker that knew its task
      metrics.count(task, "retried")
      if wait > 0 then
        rcall("HSET", job_key, "state", "scheduled", "retries", retries - 1, "error", error_text,
              "queued", queue.now + wait)
        delay_job(queue, id, queue.now + wait)
      else
        rcall("HSET", job_key, "state", "pending", "retries", retries - 1, "error", error_text,
              "queued", queue.now)
        rcall("LPUSH", pending_key, id)
      end
      code = 2
    else
      metrics.count(task, "failed")
      rcall("RPUSH", failed_key, id)
      release(queue, f[4], id)
      end_job(queue, id, job_key, "failed", f[7], { "error", error_text })
    end
    receipts.note(id, token, code)
  elseif code == 0 and rcall("ZREM", owned_key, id) == 1 then
    -- Its record vanished while it ran here (eviction, a manual DEL).
    release_vanished(queue, id)
    ended = ended + 1
  end
  codes[#codes + 1] = code
end
if ended > 0 then rcall("HINCRBY", counts_key, "active", -ended) end
receipts.keep()
metrics.flush()
return codes
