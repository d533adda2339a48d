--[[
  Lease up to `max` runnable jobs to one worker process, oldest first. Each
  lease gets a fresh token (the job's "lease" counter) that finish, fail and
  give-back must present. Counts as an attempt. Also a heartbeat for the
  process: a fetching process is alive. First, delayed jobs whose time came
  (by Redis' clock) join the back of the pending list, at most `promote`
  per call (see give_back_unknown.lua).
  Input:
    KEYS[1] pending  LIST of runnable job ids
    KEYS[2] procs    ZSET process id -> ms when its first job can turn stale
    KEYS[3] beats    HASH process id -> last heartbeat ms
    KEYS[4] counts   HASH "active", "waiting" counters
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
for _, id in ipairs(rcall("ZRANGEBYSCORE", delayed_key, "-inf", now, "LIMIT", 0, promote)) do
  rcall("ZREM", delayed_key, id)
  if rcall("EXISTS", prefix .. "job:" .. id) == 1 then
    rcall("HSET", prefix .. "job:" .. id, "state", "pending")
  end
  rcall("LPUSH", pending_key, id)  -- without a record, the loop below reports it
end
local owned_key = prefix .. "owned:" .. proc
local jobs, problems = {}, {}
local leased = 0
for _ = 1, max_jobs do
  local id = rcall("RPOP", handoff_key) or rcall("RPOP", pending_key)
  if not id then break end
  local job_key = prefix .. "job:" .. id
  local kind = rcall("TYPE", job_key).ok
  if kind == "hash" then
    local f = rcall("HMGET", job_key, "task", "res", "enc", "params", "retries",
                    "attempts", "error", "lease")
    local token = (tonumber(f[8]) or 0) + 1
    local attempts = (tonumber(f[6]) or 0) + 1
    rcall("HSET", job_key, "state", "active", "owner", proc, "started", now,
          "lease", token, "attempts", attempts)
    rcall("ZADD", owned_key, timeouts[f[1]] or default_timeout, id)
    leased = leased + 1
    local n = #jobs
    jobs[n + 1], jobs[n + 2], jobs[n + 3], jobs[n + 4], jobs[n + 5] = id, token, f[1], f[2], f[3]
    jobs[n + 6], jobs[n + 7], jobs[n + 8], jobs[n + 9] = f[4], f[5], attempts, f[7]
  elseif kind == "none" then
    problems[#problems + 1] = "job " .. id .. " was in the pending list without a record; dropped"
      .. passed_on(id)
  else
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
if leased > 0 then
  rcall("HINCRBY", counts_key, "active", leased)
  touch_process(procs_key, beats_key, proc, owned_key, now)
end
return { jobs, problems }
