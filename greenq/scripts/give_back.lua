--[[
  Give running jobs back to the queue, untouched (shutdown timeout, second
  SIGINT): each goes to the head of the pending list, keeps its resource and
  does not count the attempt. A job a cancel reached (cancel.lua) ends
  "cancelled" instead: it must not run again. Lease-checked like complete.lua.
  Input:
    KEYS[1] pending  LIST of runnable job ids (RPOP end is the head)
    KEYS[2] counts   HASH "active", "waiting" counters
    KEYS[3] locks    HASH resource id -> holding job id
    KEYS[4] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, owned:<process id>
    ARGV[2] process id
    ARGV[3] "1": drop this process' earlier receipts first (include/receipts.lua)
    ARGV[4] ms to keep an ended record (result_ttl), ARGV[5] at least when watched
            (include/ended.lua)
    ARGV[6..] pairs: job id, lease token
  Output: one code per job: 1 given back (now, or by an earlier send); 4 cancelled;
          0 no record (its resource, if others wait for it, is passed on);
          -1 lease lost
]]
local rcall = redis.call
local pending_key, counts_key, locks_key, held_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, proc = ARGV[1], ARGV[2]
-- @include check_lease
-- @include release
-- @include receipts
-- @include now_ms
-- @include ended

local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key, keep = tonumber(ARGV[4]), grace = tonumber(ARGV[5]),
                now = now_ms() }
local receipts = open_receipts(prefix, proc)
local owned_key = prefix .. "owned:" .. proc
local codes, given = {}, 0
receipts.drop(ARGV[3])
for i = 6, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local job_key = prefix .. "job:" .. id
  local f, code = receipts.check(job_key, id, token)
  if f and f[6] then
    rcall("ZREM", owned_key, id)
    rcall("SREM", prefix .. "cancels:" .. proc, id)
    release(queue, f[4], id)
    end_job(queue, id, job_key, "cancelled", f[7], {})
    given = given + 1
    code = 4
    receipts.note(id, token, code)
  elseif f then
    rcall("ZREM", owned_key, id)
    local attempts = tonumber(rcall("HGET", job_key, "attempts")) or 1
    rcall("HSET", job_key, "state", "pending", "attempts", math.max(attempts - 1, 0))
    rcall("HDEL", job_key, "unknown_since")  -- a run of a worker that knew its task
    rcall("RPUSH", pending_key, id)
    given = given + 1
    receipts.note(id, token, code)
  elseif code == 0 and rcall("ZREM", owned_key, id) == 1 then
    -- Its record vanished while it ran here (eviction, a manual DEL).
    release_vanished(queue, id)
    given = given + 1
  end
  codes[#codes + 1] = code
end
if given > 0 then rcall("HINCRBY", counts_key, "active", -given) end
receipts.keep()
return codes
