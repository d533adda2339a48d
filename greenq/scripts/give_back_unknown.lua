--[[
  Give back jobs whose task the fetching process does not know (a rolling
  deploy: a new task's jobs reach an old worker), for a worker that knows
  it. Each waits in the delayed set (state "scheduled") for a back-off, then
  fetch.lua makes it runnable again; it keeps its resource meanwhile, so the
  next job of that resource cannot overtake it, and the fetch does not count
  as an attempt. The grace runs by Redis' clock from the first give-back in
  an unbroken series (the record's unknown_since; a run of a worker that knew
  the task, ended by a retry, a give-back or a stale flush, deletes it, and
  the series starts again). A job still given back when
  its grace is over fails for good, whatever its retries, with the error
  text given, and its resource goes to the next waiting job. The back-off
  doubles (the time waited so far, between the first and the longest
  back-off) and never passes the end of the grace. Lease-checked like
  complete.lua.
  Input:
    KEYS[1] delayed  ZSET job id -> ms it becomes runnable
    KEYS[2] counts   HASH "active", "waiting" counters
    KEYS[3] pending  LIST of runnable job ids
    KEYS[4] locks    HASH resource id -> holding job id
    KEYS[5] failed   LIST of failed job ids, oldest first
    KEYS[6] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, owned:<process id>
    ARGV[2] process id
    ARGV[3] "1": drop this process' earlier receipts first (include/receipts.lua)
    ARGV[4] grace ms
    ARGV[5] first back-off ms, ARGV[6] longest back-off ms
    ARGV[7..] triples: job id, lease token, error text (for a job whose grace is over)
  Output: one code per job: 3 delayed; 1 failed (its grace is over); 0 no
          record (its resource, if others wait for it, is passed on);
          -1 lease lost. (The first two also for an earlier send of this call.)
]]
local rcall = redis.call
local delayed_key, counts_key, pending_key, locks_key, failed_key, held_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, proc = ARGV[1], ARGV[2]
local grace = tonumber(ARGV[4])
local first_backoff, longest_backoff = tonumber(ARGV[5]), tonumber(ARGV[6])
-- @include now_ms
-- @include check_lease
-- @include release
-- @include receipts
-- @include ended

local now = now_ms()
-- keep: a job ended here ends failed, and failed records stay.
local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key, keep = 0, grace = 0, now = now }
local receipts = open_receipts(prefix, proc)
local owned_key = prefix .. "owned:" .. proc
local codes, ended = {}, 0
receipts.drop(ARGV[3])
for i = 7, #ARGV, 3 do
  local id, token = ARGV[i], ARGV[i + 1]
  local job_key = prefix .. "job:" .. id
  local f, code = receipts.check(job_key, id, token)
  if f then
    rcall("ZREM", owned_key, id)
    ended = ended + 1
    local u = rcall("HMGET", job_key, "unknown_since", "attempts")
    local since = tonumber(u[1]) or now
    local waited = now - since
    local attempts = math.max((tonumber(u[2]) or 1) - 1, 0)
    if waited >= grace then
      rcall("HDEL", job_key, "unknown_since")
      rcall("RPUSH", failed_key, id)
      release(queue, f[4], id)
      end_job(queue, id, job_key, "failed", f[7], { "error", ARGV[i + 2], "attempts", attempts })
      code = 1
    else
      local backoff = math.min(math.max(waited, first_backoff), longest_backoff, grace - waited)
      rcall("HSET", job_key, "state", "scheduled", "attempts", attempts, "unknown_since", since)
      rcall("ZADD", delayed_key, now + backoff, id)
      code = 3
    end
    receipts.note(id, token, code)
  elseif code == 0 and rcall("ZREM", owned_key, id) == 1 then
    -- Its record vanished while this process held it (eviction, a manual DEL).
    release_vanished(queue, id)
    ended = ended + 1
  end
  codes[#codes + 1] = code
end
if ended > 0 then rcall("HINCRBY", counts_key, "active", -ended) end
receipts.keep()
return codes
