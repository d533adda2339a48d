--[[
  Add jobs. A job whose resource is held by another job waits at the end of
  that resource's FIFO (no polling: release() promotes it); every other job
  becomes runnable at once. Safe to run twice: an id that already has a
  record is skipped, so a re-sent submit never adds a job twice.
  Input:
    KEYS[1] pending  LIST of runnable job ids (LPUSH in, RPOP out)
    KEYS[2] locks    HASH resource id -> id of the job holding it
    KEYS[3] counts   HASH "active", "waiting" counters
    KEYS[4] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    ARGV[1] key prefix "<ns>:{<queue>}:"; per-id keys: job:<id>, wait:<resource>
    ARGV[2..] groups of 6: job id, task id, resource id ("" = none),
              encoding ("m" msgpack, "j" json), params blob, retries
  Output: how many jobs were added
]]
local rcall = redis.call
local pending_key, locks_key, counts_key, held_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = ARGV[1]
-- @include release
-- @include enqueue

local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key }
local added = 0
for i = 2, #ARGV, 6 do
  local id, resource = ARGV[i], ARGV[i + 2]
  local job_key = prefix .. "job:" .. id
  if rcall("EXISTS", job_key) == 0 then
    rcall("HSET", job_key, "task", ARGV[i + 1], "enc", ARGV[i + 3],
          "params", ARGV[i + 4], "retries", ARGV[i + 5], "attempts", 0)
    if resource ~= "" then rcall("HSET", job_key, "res", resource) end
    enqueue(queue, id, job_key, resource)
    added = added + 1
  end
end
return added
