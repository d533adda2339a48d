--[[
  Lease up to `max` runnable jobs to one worker process, oldest first. Each
  lease gets a fresh token that finish, fail and give-back must present,
  drawn from one counter per queue (counts "fence"), so that it also serves
  tasks as a fencing token: every run started holds a larger one than every
  earlier run. Counts as an attempt. An id whose job was cancelled while it
  waited here (cancel.lua) is skipped, and its record left to expire
  (include/bury.lua); so is an empty id, a wake-up (include/delay.lua). Also a
  heartbeat for the process: a fetching process is alive.
  First, delayed jobs whose time came (by Redis' clock) become runnable, at
  most `promote` per call: one that holds its resource (a retry's back-off,
  a rate limit's wait, a give-back for an unknown task) joins the back of
  pending; one submitted with a delay takes its place in its resource's
  order only now (include/enqueue.lua). One whose task this process does
  not know is left there for another process, once.
  Rate limits: a job of a task with a limit of N starts per period starts
  only when the N-th latest start of that task is at least a period ago
  (a sliding window over a log of the last N starts, rate:<task>, by Redis'
  clock). Otherwise it waits in the delayed set, its resource kept and no
  attempt counted, for a slot: slots are handed out a period / N apart
  (rates: task -> the next free slot), so waiting jobs neither all wake at
  once nor move in a loop; when its slot comes the window is checked again.
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
    KEYS[10] rates   HASH task id -> ms of its next free rate-limit slot
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>, owned:<process id>,
            rate:<task> (LIST of its latest starts, ms, newest first)
    ARGV[2] process id
    ARGV[3] max jobs
    ARGV[4] timeout ms for tasks this process does not know
    ARGV[5] promote: delayed jobs made runnable per call at most
    ARGV[6] k: how many rate-limited tasks follow
    ARGV[7 .. 6+3k] triples: task id, starts allowed, period ms
    ARGV[7+3k ..] pairs: task id, timeout ms (every task this process knows)
  Output: { jobs, problems, next due }
    jobs: flat, 10 per job: id, token, task, resource, encoding, params,
          retries left, attempts, last error, trace (W3C traceparent
          written by submit.lua; nil none)
    problems: one text per id in pending that was not a job record (a
          missing record is dropped; any other value is kept as a failed
          job); a resource such an id held goes to the next job waiting
    next due: ms until the earliest delayed job is due (0 if it is due
          already), -1 when none waits
]]
local rcall = redis.call
local pending_key, procs_key, beats_key, counts_key, failed_key, handoff_key, locks_key, held_key,
      delayed_key, rates_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local prefix, proc = ARGV[1], ARGV[2]
-- The timeouts stay text: they are only sent on (ZADD), and a number
-- argument is formatted again on every redis.call (about 0.2 us).
local max_jobs, default_timeout, promote = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
-- @include now_ms
-- @include touch_process
-- @include release
-- @include enqueue

local MAX_SKIPPED = 1000  -- cancelled ids skipped per call at most: a bounded call

local limits = {}
local first_pair = 7 + 3 * tonumber(ARGV[6])
for i = 7, first_pair - 1, 3 do
  limits[ARGV[i]] = { count = tonumber(ARGV[i + 1]), period = tonumber(ARGV[i + 2]) }
end
local timeouts = {}
for i = first_pair, #ARGV, 2 do timeouts[ARGV[i]] = ARGV[i + 1] end
local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key }

-- Where a pending id has no job record, what the problem text adds.
local function passed_on(id)
  local resource = release_vanished(queue, id)
  if not resource then return "" end
  return "; its resource " .. resource .. " went to the next job waiting for it"
end

-- Whether a start of `task` now keeps within its limit: the N-th latest
-- start is at least a period ago. Records the start when it does; else
-- hands out the job's slot (returned), a period / N after the last one.
local function rate_slot(task, limit, now)
  local log_key = prefix .. "rate:" .. task
  local nth = tonumber(rcall("LINDEX", log_key, limit.count - 1))
  if not nth or now - nth >= limit.period then
    rcall("LPUSH", log_key, now)
    rcall("LTRIM", log_key, 0, limit.count - 1)
    rcall("PEXPIRE", log_key, limit.period)
    return nil
  end
  local slot = math.max(tonumber(rcall("HGET", rates_key, task)) or 0, nth + limit.period)
  rcall("HSET", rates_key, task, slot + limit.period / limit.count)
  return math.ceil(slot)
end

local now = now_ms()
local now_text = string.format("%d", now)  -- written with every lease
local fresh = {}
for _, id in ipairs(rcall("ZRANGEBYSCORE", delayed_key, "-inf", now, "LIMIT", 0, promote)) do
  rcall("ZREM", delayed_key, id)
  local job_key = prefix .. "job:" .. id
  local f = redis.pcall("HMGET", job_key, "res", "state")
  if not f.err and f[1] and rcall("HGET", locks_key, f[1]) ~= id then
    enqueue(queue, id, job_key, f[1])  -- submitted with a delay: its turn starts now
  else
    -- It kept its resource (or has none) while it waited: it just becomes
    -- runnable. Without a record, the loop below reports it.
    if not f.err and f[2] then rcall("HSET", job_key, "state", "pending") end
    rcall("LPUSH", pending_key, id)
  end
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
local owned = {}  -- ZADD's arguments for the jobs leased: timeout ms, id, ...
local fence = tonumber(rcall("HGET", counts_key, "fence")) or 0
-- Lease job `id` (its record's fields `f`, as read below).
local function lease(id, job_key, f)
  taken = taken + 1
  fence = fence + 1
  local attempts = (tonumber(f[6]) or 0) + 1
  rcall("HSET", job_key, "state", "active", "owner", proc, "started", now_text,
        "lease", fence, "attempts", attempts)
  owned[leased * 2 + 1], owned[leased * 2 + 2] = timeouts[f[1]] or default_timeout, id
  leased = leased + 1
  local n = #jobs
  jobs[n + 1], jobs[n + 2], jobs[n + 3], jobs[n + 4], jobs[n + 5] = id, fence, f[1], f[2], f[3]
  jobs[n + 6], jobs[n + 7], jobs[n + 8], jobs[n + 9] = f[4], f[5], attempts, f[7]
  jobs[n + 10] = f[9]
end

-- An id in pending whose key holds no job record (`kind`: "none", or the
-- Redis type it holds instead).
local function not_a_job(id, job_key, kind)
  taken = taken + 1
  if kind == "none" then
    problems[#problems + 1] = "job " .. id .. " was in the pending list without a record; dropped"
      .. passed_on(id)
    return
  end
  local raw = "<a Redis " .. kind .. ">"
  if kind == "string" then raw = rcall("GET", job_key) end
  rcall("DEL", job_key)
  local why = "job " .. id .. ": record is a Redis " .. kind .. ", not a job hash"
  rcall("HSET", job_key, "task", "", "state", "failed", "error", why, "raw", raw,
        "retries", 0, "attempts", 0)
  rcall("RPUSH", failed_key, id)
  problems[#problems + 1] = why .. "; moved to the failed queue" .. passed_on(id)
end

-- The next ids in line, up to `count` of them: one RPOP for a batch, not
-- one per job; the handoff's first. False when both lists are empty.
local function next_ids(count)
  return rcall("RPOP", handoff_key, count) or rcall("RPOP", pending_key, count)
end

-- Every id popped is dealt with, so a call may skip up to MAX_SKIPPED plus
-- one batch.
local function take(id)
  local job_key = prefix .. "job:" .. id
  -- No TYPE first: HMGET answers nils for a missing key and an error for
  -- another type, and both are rare.
  local f = id ~= "" and redis.pcall("HMGET", job_key, "task", "res", "enc", "params",
                                     "retries", "attempts", "error", "state", "trace")
  if id == "" then
    skipped = skipped + 1  -- a wake-up (include/delay.lua), counted like a cancelled id
  elseif f.err then
    not_a_job(id, job_key, rcall("TYPE", job_key).ok)
  elseif not f[1] and not f[8] and rcall("EXISTS", job_key) == 0 then
    not_a_job(id, job_key, "none")
  elseif f[8] == "cancelled" then
    skipped = skipped + 1
    bury(job_key)
  elseif fresh[id] and not timeouts[f[1]] then
    passed_over[#passed_over + 1] = id
  else
    local slot = limits[f[1]] and rate_slot(f[1], limits[f[1]], now)
    if slot then  -- over its task's rate limit: waits, resource kept, no attempt counted
      rcall("HSET", job_key, "state", "scheduled")
      rcall("ZADD", delayed_key, slot, id)
    else
      lease(id, job_key, f)
    end
  end
end

while taken < max_jobs and skipped < MAX_SKIPPED do
  local ids = next_ids(max_jobs - taken)
  if not ids then break end
  for i = 1, #ids do take(ids[i]) end
end
for i = #passed_over, 1, -1 do rcall("RPUSH", pending_key, passed_over[i]) end
if skipped > 0 then rcall("HINCRBY", counts_key, "skipped", -skipped) end
if leased > 0 then
  rcall("ZADD", owned_key, unpack(owned))
  rcall("HSET", counts_key, "fence", fence)
  rcall("HINCRBY", counts_key, "active", leased)
  touch_process(procs_key, beats_key, proc, owned_key, now)
end
local first = rcall("ZRANGE", delayed_key, 0, 0, "WITHSCORES")[2]
return { jobs, problems, first and math.max(tonumber(first) - now, 0) or -1 }
