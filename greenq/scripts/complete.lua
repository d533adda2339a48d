--[[
  Finish jobs that succeeded: forget them and hand each one's resource to the
  next waiting job. Only the current lease holder may finish a job, so the
  late finish of a run whose lease a stale flush took away changes nothing.
  Input:
    KEYS[1] pending  LIST of runnable job ids
    KEYS[2] locks    HASH resource id -> holding job id
    KEYS[3] counts   HASH "active", "waiting" counters
    KEYS[4] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, owned:<process id>
    ARGV[2] process id
    ARGV[3] "1": drop this process' earlier receipts first (include/receipts.lua)
    ARGV[4..] pairs: job id, lease token
  Output: one code per job: 1 done (now, or by an earlier send of this
          finish); 0 no record (its resource, if others wait for it, is
          passed on); -1 lease lost
]]
local rcall = redis.call
local pending_key, locks_key, counts_key, held_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, proc = ARGV[1], ARGV[2]
-- @include check_lease
-- @include release
-- @include receipts

local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key }
local receipts = open_receipts(prefix, proc)
local owned_key = prefix .. "owned:" .. proc
local codes, done = {}, 0
receipts.drop(ARGV[3])
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local job_key = prefix .. "job:" .. id
  local f, code = receipts.check(job_key, id, token)
  if f then
    rcall("ZREM", owned_key, id)
    rcall("DEL", job_key)
    release(queue, f[4], id)
    done = done + 1
    receipts.note(id, token, code)
  elseif code == 0 and rcall("ZREM", owned_key, id) == 1 then
    -- Its record vanished while it ran here (eviction, a manual DEL).
    release_vanished(queue, id)
    done = done + 1
  end
  codes[#codes + 1] = code
end
if done > 0 then rcall("HINCRBY", counts_key, "active", -done) end
receipts.keep()
return codes
