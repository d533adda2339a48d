--[[
  Add jobs. A job whose resource is held by another job waits at the end of
  that resource's FIFO (no polling: release() promotes it); every other job
  becomes runnable at once. Safe to run twice. A call sent again unchanged
  (ChannelPool.execute re-sends a submit whose connection broke before the
  reply) finds the mark its first run left, sent:<nonce>, and adds nothing,
  even when a worker ran and deleted its jobs in between; the mark lives
  longer than such a re-send can take. And an id that has a record is
  skipped (a later submit of the same id adds nothing while the job lives).
  Input:
    KEYS[1] pending  LIST of runnable job ids (LPUSH in, RPOP out)
    KEYS[2] locks    HASH resource id -> id of the job holding it
    KEYS[3] counts   HASH "active", "waiting" counters
    KEYS[4] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    ARGV[1] key prefix "<ns>:{<queue>}:"; per-id keys: job:<id>, wait:<resource>,
            sent:<nonce>
    ARGV[2] nonce, new for each call (Broker.submit_calls)
    ARGV[3] ms to keep the call's mark (Broker.resend_window_ms)
    ARGV[4..] groups of 6: job id, task id, resource id ("" = none),
              encoding ("m" msgpack, "j" json), params blob, retries
  Output: how many jobs were added (0 for a re-sent call)
]]
local rcall = redis.call
local pending_key, locks_key, counts_key, held_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = ARGV[1]
-- @include release
-- @include enqueue

if not rcall("SET", prefix .. "sent:" .. ARGV[2], 1, "NX", "PX", ARGV[3]) then
  return 0
end
local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key }
local added = 0
for i = 4, #ARGV, 6 do
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
