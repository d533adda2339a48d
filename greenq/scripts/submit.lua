--[[
  Add jobs. A job whose resource is held by another job waits at the end of
  that resource's FIFO (no polling: release() promotes it); every other job
  becomes runnable at once.
  An id that has a record is skipped: a later submit of the same id (a
  caller's job_id) adds nothing while the job's record lives, and duplicate
  ids in one call give one job.
  A coalescing job (flag "1", always with a resource) whose resource's
  newest job has not started yet (the last id in its wait list, else the
  holder; state pending, waiting or scheduled) and is of the same task
  replaces that job's params and retries instead of adding a job; the reply
  names that job's id. A cancelled one does not count: a new job is added.
  A job with a due time later than Redis' now waits in the delayed set
  (state "scheduled"), outside its resource's order: fetch.lua puts it in
  that order when it comes due (include/delay.lua wakes an idle worker
  when it is the earliest there).
  Safe to run twice. A call sent again unchanged (ChannelPool.execute
  re-sends a submit whose connection broke before the reply) finds the mark
  its first run left, sent:<nonce>, and adds nothing, even when a worker ran
  and deleted its jobs in between; the mark lives longer than such a
  re-send can take, and holds the first run's coalesced ids.
  Input:
    KEYS[1] pending  LIST of runnable job ids (LPUSH in, RPOP out)
    KEYS[2] locks    HASH resource id -> id of the job holding it
    KEYS[3] counts   HASH "active", "waiting" counters
    KEYS[4] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    KEYS[5] delayed  ZSET job id -> ms it becomes runnable
    ARGV[1] key prefix "<ns>:{<queue>}:"; per-id keys: job:<id>, wait:<resource>,
            sent:<nonce>
    ARGV[2] nonce, new for each call (Broker.submit_calls)
    ARGV[3] ms to keep the call's mark (Broker.resend_window_ms)
    ARGV[4..] groups of 9: job id, task id, resource id ("" = none),
              encoding ("m" msgpack, "j" json), params blob, retries,
              coalesce ("1" or "0"), due ("" now; "+<ms>" that long after
              Redis' now; "<ms>" an epoch time in ms), trace (the W3C
              traceparent of the submit's span, greenq/tracing.py; "" none)
  Output: { how many jobs were added (0 for a re-sent call), coalesced:
            flat pairs of (the group's position in this call, 1-based; the
            id of the job it was merged into) }
]]
local rcall = redis.call
local pending_key, locks_key, counts_key, held_key, delayed_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]
local mark_key = prefix .. "sent:" .. ARGV[2]
-- @include now_ms
-- @include release
-- @include enqueue
-- @include coalesce
-- @include delay

if not rcall("SET", mark_key, 1, "NX", "PX", ARGV[3]) then
  local first = rcall("GET", mark_key)
  if first and first ~= "1" then return { 0, cjson.decode(first) } end
  return { 0, {} }
end
local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key, delayed = delayed_key }
local added, coalesced = 0, {}
-- A field and its value at the end of HSET's flat arguments.
local function put(fields, name, value)
  local n = #fields
  fields[n + 1], fields[n + 2] = name, value
end
local now = nil
for i = 4, #ARGV, 9 do
  local id, task, resource = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local job_key = prefix .. "job:" .. id
  if rcall("EXISTS", job_key) == 0 then
    local target = ARGV[i + 6] == "1" and coalesce_target(queue, task, resource)
    local due = ARGV[i + 7]
    if target then
      rcall("HSET", prefix .. "job:" .. target, "enc", ARGV[i + 3], "params", ARGV[i + 4],
            "retries", ARGV[i + 5])
      coalesced[#coalesced + 1] = (i - 4) / 9 + 1
      coalesced[#coalesced + 1] = target
    else
      now = now or now_ms()
      if due ~= "" then
        due = string.sub(due, 1, 1) == "+" and now + tonumber(string.sub(due, 2)) or tonumber(due)
      end
      local later = due ~= "" and due > now
      -- "queued": from when its wait counts (include/metrics.lua), for a
      -- delayed job its due time. Fields at their default are left out
      -- (every reader takes a missing retries or attempts for 0): fewer
      -- bytes per queued job, and one HSET.
      local fields = { "task", task, "enc", ARGV[i + 3], "params", ARGV[i + 4],
                       "queued", later and due or now }
      if ARGV[i + 5] ~= "0" then put(fields, "retries", ARGV[i + 5]) end
      if resource ~= "" then put(fields, "res", resource) end
      if ARGV[i + 8] ~= "" then put(fields, "trace", ARGV[i + 8]) end
      if later then
        put(fields, "state", "scheduled")
      elseif resource == "" then
        put(fields, "state", "pending")
      end
      rcall("HSET", job_key, unpack(fields))
      if later then
        delay_job(queue, id, due)
      elseif resource == "" then
        rcall("LPUSH", pending_key, id)  -- what enqueue does for a job without a resource
      else
        enqueue(queue, id, job_key, resource)
      end
      added = added + 1
    end
  end
end
if #coalesced > 0 then rcall("SET", mark_key, cjson.encode(coalesced), "XX", "KEEPTTL") end
return { added, coalesced }
