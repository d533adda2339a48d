--[[
  Fire one occurrence of a schedule, exactly once however many processes
  try: the occurrence is the schedule's stored next fire time, and only the
  caller that still finds that time stored (compare-and-set) fires it. In
  the same step the next fire time moves on (the caller computed it: the
  first fire time after Redis' now, so fire times missed while nothing ran
  give this one job, not a burst), "last" records when it fired, and the job
  is submitted under the occurrence's id.
  Runs of one schedule never overlap: the job takes the schedule's resource
  ("schedule:<name>" unless the schedule names one) and coalesces: when that
  resource's newest job that has not started is of the same task, this fire
  replaces its params and retries instead of queueing another, so at most
  one run waits behind a running one (include/coalesce.lua, as submit.lua).
  Input:
    KEYS[1] schedules  ZSET schedule name -> next fire time ms
    KEYS[2] pending    LIST of runnable job ids
    KEYS[3] locks      HASH resource id -> id of the job holding it
    KEYS[4] counts     HASH "active", "waiting" counters
    KEYS[5] held       HASH holder id -> resource, for holders with waiters
    ARGV[1] key prefix; per-id keys schedule:<name>, job:<id>, wait:<resource>
    ARGV[2] name
    ARGV[3] the occurrence: the fire time ms the caller found stored
    ARGV[4] the next fire time ms
    ARGV[5] cron, ARGV[6] every ms, ARGV[7] tz: the timing the caller
            computed ARGV[4] from (as stored; "" none)
    ARGV[8] the occurrence's job id
  Output: { 1, job id } fired (the new job's id, or the id of the job it
            coalesced into); { 0 } someone else fired it, or the schedule
            changed or is gone; { -1 } not due by Redis' clock;
            { -2 } ARGV[4] is not after Redis' now: compute it again
]]
local rcall = redis.call
local schedules_key, pending_key, locks_key, counts_key, held_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, name = ARGV[1], ARGV[2]
local fire_ms, next_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local id = ARGV[8]
-- @include now_ms
-- @include release
-- @include enqueue
-- @include coalesce

local stored = rcall("ZSCORE", schedules_key, name)
if not stored or tonumber(stored) ~= fire_ms then return { 0 } end
local def_key = prefix .. "schedule:" .. name
local d = rcall("HMGET", def_key, "cron", "every", "tz", "task", "res", "enc", "params", "retries")
if d[1] ~= ARGV[5] or d[2] ~= ARGV[6] or d[3] ~= ARGV[7] or not d[4] then return { 0 } end
local now = now_ms()
if now < fire_ms then return { -1 } end
if next_ms <= now then return { -2 } end

rcall("ZADD", schedules_key, next_ms, name)
rcall("HSET", def_key, "last", now)
local task, resource = d[4], d[5]
if resource == "" then resource = "schedule:" .. name end
local queue = { prefix = prefix, pending = pending_key, locks = locks_key, counts = counts_key,
                held = held_key }
local target = coalesce_target(queue, task, resource)
if target then
  rcall("HSET", prefix .. "job:" .. target, "enc", d[6], "params", d[7], "retries", d[8])
  return { 1, target }
end
local job_key = prefix .. "job:" .. id
if rcall("EXISTS", job_key) == 1 then return { 1, id } end
rcall("HSET", job_key, "task", task, "enc", d[6], "params", d[7], "retries", d[8],
      "attempts", 0, "res", resource, "queued", now)
enqueue(queue, id, job_key, resource)
return { 1, id }
