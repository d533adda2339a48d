--[[
  Create or replace a schedule. Its definition lives in the hash
  schedule:<name>; its next fire time in the `schedules` ZSET. A replacement
  whose timing (cron, every, tz) is the one stored keeps its next fire time
  (a program that adds its schedules at every start does not push them
  back); a new timing takes the caller's next fire time. The last run's
  time ("last") is kept either way.
  Input:
    KEYS[1] schedules  ZSET schedule name -> next fire time ms
    ARGV[1] key prefix "<ns>:{<queue>}:"; per-name key schedule:<name>
    ARGV[2] name
    ARGV[3] next fire time ms, for a new schedule or a new timing
    ARGV[4] cron ("" none), ARGV[5] every ms ("" none), ARGV[6] tz
    ARGV[7] task id, ARGV[8] resource id ("" = "schedule:<name>"),
    ARGV[9] params encoding, ARGV[10] params blob, ARGV[11] retries
  Output: { 1 created, 2 replaced with a new timing, 3 replaced keeping
            its timing; the next fire time ms }
]]
local rcall = redis.call
local schedules_key = KEYS[1]
local prefix, name, next_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cron, every, tz = ARGV[4], ARGV[5], ARGV[6]
local def_key = prefix .. "schedule:" .. name

local old = rcall("HMGET", def_key, "cron", "every", "tz")
local stored = rcall("ZSCORE", schedules_key, name)
local outcome = 2
if not old[3] or not stored then
  outcome = 1
elseif old[1] == cron and old[2] == every and old[3] == tz then
  outcome = 3
  next_ms = tonumber(stored)
end
rcall("HSET", def_key, "cron", cron, "every", every, "tz", tz, "task", ARGV[7],
      "res", ARGV[8], "enc", ARGV[9], "params", ARGV[10], "retries", ARGV[11])
rcall("ZADD", schedules_key, next_ms, name)
return { outcome, next_ms }
