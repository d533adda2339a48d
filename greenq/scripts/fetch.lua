--[[
  Lease up to `max` runnable jobs to one worker process, oldest first. Each
  lease gets a fresh token that finish, fail and give-back must present,
  drawn from one counter per queue (counts "fence"), so that it also serves
  tasks as a fencing token: every run started holds a larger one than every
  earlier run. Counts as an attempt. An id whose job was cancelled while it
  waited here (cancel.lua) is skipped, and its record left to expire
  (include/bury.lua). Also a heartbeat for the
  process: a fetching process is alive. First, delayed jobs whose time came
  (by Redis' clock) join the back of the pending list, at most `promote`
  per call (see give_back_unknown.lua); one whose task this process does
  not know is left there for another process, once.
  Input:
    KEYS[1] pending  LIST of runnable job ids
    KEYS[2] procs    ZSET process id -> ms when its first job can turn stale
    KEYS[3] beats    HASH process id -> last heartbeat ms
    KEYS[4] counts   HASH "active", "waiting", "skipped" (cancelled ids still in
                     pending/handoff) counters, "fence" (the last lease token)
    KEYS[5] failed   LIST of failed job ids
    KEYS[6] handoff  LIST of ids a waiting fetcher moved out of pending (see
                     Broker.wait_and_fetch); they were next in line, so they
                     are leased first. Any process's fetch takes them: one
                     whose waiter died before its fetch ran is not stranded.
    KEYS[7] locks    HASH resource id -> holding job id
    KEYS[8] held     HASH holder id -> resource, for holders with waiters (include/release.lua)
    KEYS[9] delayed  ZSET job id -> ms it becomes runnable
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, owned:<process id>
    ARGV[2] process id
    ARGV[3] max jobs
    ARGV[4] timeout ms for tasks this process does not know
    ARGV[5] promote: delayed jobs moved to pending at most
    ARGV[6..] pairs: task id, timeout ms
  Output: { jobs, problems }
    jobs: flat, 9 per job: id, token, task, resource, encoding, params,
          retries left, attempts, last error
    problems: one text per id in pending that was not a job record (a
          missing record is dropped; any other value is kept as a failed
          job); a resource such an id held goes to the next job waiting
]]
local rcall = redis.call
local pending_key, procs_key, beats_key, counts_key, failed_key, handoff_key, locks_key, held_key,
      delayed_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local prefix, proc = ARGV[1], ARGV[2]
local max_jobs, default_timeout, promote = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
-- @include now_ms
-- @include touch_process
-- @include release

local MAX_SKIPPED = 1000  -- cancelled ids skipped per call at most: a bounded call

local timeouts = {}
for i = 6, #ARGV, 2 do timeouts[ARGV[i]] = tonumber(ARGV[i + 1]) end

-- Where a pending id has no job record, what the problem text adds. (Rare:
-- the keys' table is built here, not on every fetch.)
local function passed_on(id)
  local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                  held = held_key }
  local resource = release_vanished(queue, id)
  if not resource then return "" end
  return "; its resource " .. resource .. " went to the next job waiting for it"
end

local now = now_ms()
-- A delayed job kept its resource while it waited: it just becomes runnable.
local fresh = {}
for _, id in ipairs(rcall("ZRANGEBYSCORE", delayed_key, "-inf", now, "LIMIT", 0, promote)) do
  rcall("ZREM", delayed_key, id)
  if rcall("EXISTS", prefix .. "job:" .. id) == 1 then
    rcall("HSET", prefix .. "job:" .. id, "state", "pending")
  end
  rcall("LPUSH", pending_key, id)  -- without a record, the loop below reports it
  fresh[id] = true
end
-- A job just promoted whose task this process does not know is passed over
-- once: it goes back to the head of pending when this call ends, which
-- serves a process blocked in BLMOVE (one that may know the task) before
-- this one's next call. Otherwise whichever process promotes first would
-- lease it, give it back and win every back-off (the idle ones all wake
-- on the same period). Only once per promotion: no fetch loop.
local passed_over = {}
local owned_key = prefix .. "owned:" .. proc
local jobs, problems = {}, {}
local leased, taken, skipped = 0, 0, 0
local fence = tonumber(rcall("HGET", counts_key, "fence")) or 0
while taken < max_jobs and skipped < MAX_SKIPPED do
  local id = rcall("RPOP", handoff_key) or rcall("RPOP", pending_key)
  if not id then break end
  local job_key = prefix .. "job:" .. id
  -- No TYPE first: HMGET answers nils for a missing key and an error for
  -- another type, and both are rare.
  local f = redis.pcall("HMGET", job_key, "task", "res", "enc", "params", "retries",
                        "attempts", "error", "state")
  local kind = "hash"
  if f.err then
    kind, f = rcall("TYPE", job_key).ok, nil
  elseif not f[1] and not f[8] and rcall("EXISTS", job_key) == 0 then
    kind, f = "none", nil
  end
  if f and f[8] == "cancelled" then
    skipped = skipped + 1
    bury(job_key)
  elseif f and fresh[id] and not timeouts[f[1]] then
    passed_over[#passed_over + 1] = id
  elseif f then
    taken = taken + 1
    fence = fence + 1
    local attempts = (tonumber(f[6]) or 0) + 1
    rcall("HSET", job_key, "state", "active", "owner", proc, "started", now,
          "lease", fence, "attempts", attempts)
    rcall("ZADD", owned_key, timeouts[f[1]] or default_timeout, id)
    leased = leased + 1
    local n = #jobs
    jobs[n + 1], jobs[n + 2], jobs[n + 3], jobs[n + 4], jobs[n + 5] = id, fence, f[1], f[2], f[3]
    jobs[n + 6], jobs[n + 7], jobs[n + 8], jobs[n + 9] = f[4], f[5], attempts, f[7]
  elseif kind == "none" then
    taken = taken + 1
    problems[#problems + 1] = "job " .. id .. " was in the pending list without a record; dropped"
      .. passed_on(id)
  else
    taken = taken + 1
    local raw = "<a Redis " .. kind .. ">"
    if kind == "string" then raw = rcall("GET", job_key) end
    rcall("DEL", job_key)
    local why = "job " .. id .. ": record is a Redis " .. kind .. ", not a job hash"
    rcall("HSET", job_key, "task", "", "state", "failed", "error", why, "raw", raw,
          "retries", 0, "attempts", 0)
    rcall("RPUSH", failed_key, id)
    problems[#problems + 1] = why .. "; moved to the failed queue" .. passed_on(id)
  end
end
for i = #passed_over, 1, -1 do rcall("RPUSH", pending_key, passed_over[i]) end
if skipped > 0 then rcall("HINCRBY", counts_key, "skipped", -skipped) end
if leased > 0 then
  rcall("HSET", counts_key, "fence", fence)
  rcall("HINCRBY", counts_key, "active", leased)
  touch_process(procs_key, beats_key, proc, owned_key, now)
end
return { jobs, problems }
