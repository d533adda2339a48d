--[[
  Record failed runs. A job with retries left goes to the back of the
  pending list with one retry fewer and keeps its resource (so the next job
  of that resource cannot overtake it); otherwise it moves to the failed
  list and its resource goes to the next waiting job. Lease-checked like
  complete.lua.
  Input:
    KEYS[1] pending  LIST of runnable job ids
    KEYS[2] locks    HASH resource id -> holding job id
    KEYS[3] counts   HASH "active", "waiting" counters
    KEYS[4] failed   LIST of failed job ids, oldest first
    KEYS[5] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, owned:<process id>
    ARGV[2] process id
    ARGV[3] "1": drop this process' earlier receipts first (include/receipts.lua)
    ARGV[4..] groups of 4: job id, lease token, error text,
              final ("1": no retry whatever is left, e.g. undecodable record)
  Output: one code per job: 2 retried; 1 failed (now, or by an earlier send
          of this finish); 0 no record (its resource, if others wait for
          it, is passed on); -1 lease lost
]]
local rcall = redis.call
local pending_key, locks_key, counts_key, failed_key, held_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, proc = ARGV[1], ARGV[2]
-- @include check_lease
-- @include release
-- @include receipts

local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key }
local receipts = open_receipts(prefix, proc)
local owned_key = prefix .. "owned:" .. proc
local codes, ended = {}, 0
receipts.drop(ARGV[3])
for i = 4, #ARGV, 4 do
  local id, token, error_text = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local job_key = prefix .. "job:" .. id
  local f, code = receipts.check(job_key, id, token)
  if f then
    rcall("ZREM", owned_key, id)
    ended = ended + 1
    local retries = tonumber(f[5]) or 0
    if retries > 0 and ARGV[i + 3] ~= "1" then
      rcall("HSET", job_key, "state", "pending", "retries", retries - 1, "error", error_text)
      rcall("LPUSH", pending_key, id)
      code = 2
    else
      rcall("HSET", job_key, "state", "failed", "error", error_text)
      rcall("RPUSH", failed_key, id)
      release(queue, f[4], id)
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
return codes
