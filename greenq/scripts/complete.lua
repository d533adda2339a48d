--[[
  Finish jobs whose perform returned: each ends "succeeded" with its result,
  or "cancelled" when a cancel reached it first (cancel.lua marked it; the
  result is dropped), and hands its resource to the next waiting job. The
  record then expires after result_ttl (include/ended.lua). Only the current
  lease holder may finish a job, so the late finish of a run whose lease a
  stale flush took away changes nothing.
  Input:
    KEYS[1] pending  LIST of runnable job ids
    KEYS[2] locks    HASH resource id -> holding job id
    KEYS[3] counts   HASH "active", "waiting" counters
    KEYS[4] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    KEYS[5] metrics  HASH per-task counters and histograms (include/metrics.lua)
    KEYS[6] history  HASH per-minute outcome counts (include/metrics.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, owned:<process id>,
            cancels:<process id>
    ARGV[2] process id
    ARGV[3] "1": drop this process' earlier receipts first (include/receipts.lua)
    ARGV[4] ms to keep an ended record (result_ttl; 0: delete it)
    ARGV[5] ms to keep it at least when someone waits on it
    ARGV[6..] groups of 5: job id, lease token, result encoding, result blob
              ("" for both: no result, perform returned None), microseconds
              perform ran ("": not known)
  Output: one code per job: 1 succeeded (now, or by an earlier send of this
          finish); 4 cancelled; 0 no record (its resource, if others wait for
          it, is passed on); -1 lease lost
]]
local rcall = redis.call
local pending_key, locks_key, counts_key, held_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, proc = ARGV[1], ARGV[2]
-- @include now_ms
-- @include check_lease
-- @include release
-- @include receipts
-- @include ended
-- @include metrics

local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key, keep = tonumber(ARGV[4]), grace = tonumber(ARGV[5]),
                now = now_ms() }
local receipts = open_receipts(prefix, proc)
local metrics = open_metrics(KEYS[5], KEYS[6], queue.now)
local owned_key = prefix .. "owned:" .. proc
local codes, done = {}, 0
local no_fields = {}
local finished = {}  -- ids to drop from owned, in one ZREM
receipts.drop(ARGV[3])
for i = 6, #ARGV, 5 do
  local id, token = ARGV[i], ARGV[i + 1]
  local job_key = prefix .. "job:" .. id
  local f, code = receipts.check(job_key, id, token)
  if f then
    finished[#finished + 1] = id
    release(queue, f[4], id)
    local task = f[8]
    metrics.observe(task, "d", tonumber(ARGV[i + 4]))
    metrics.observe_wait(task, f[9], f[10])
    if f[6] then
      rcall("SREM", prefix .. "cancels:" .. proc, id)
      end_job(queue, id, job_key, "cancelled", f[7], no_fields)
      code = 4
    elseif ARGV[i + 3] ~= "" then
      end_job(queue, id, job_key, "succeeded", f[7], { "result", ARGV[i + 3], "renc", ARGV[i + 2] })
    else
      end_job(queue, id, job_key, "succeeded", f[7], no_fields)
    end
    metrics.count(task, code == 4 and "cancelled" or "succeeded")
    done = done + 1
    receipts.note(id, token, code)
  elseif code == 0 and rcall("ZREM", owned_key, id) == 1 then
    -- Its record vanished while it ran here (eviction, a manual DEL).
    release_vanished(queue, id)
    done = done + 1
  end
  codes[#codes + 1] = code
end
if #finished > 0 then rcall("ZREM", owned_key, unpack(finished)) end
if done > 0 then rcall("HINCRBY", counts_key, "active", -done) end
receipts.keep()
metrics.flush()
return codes
