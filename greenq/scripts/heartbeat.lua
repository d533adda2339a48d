--[[
  Heartbeat every job one process runs, in O(log n) whatever their number:
  liveness is kept per process, and a job turns stale when its process has
  been silent longer than the job's timeout.
  Input:
    KEYS[1] procs    ZSET process id -> ms when its first job can turn stale
    KEYS[2] beats    HASH process id -> last heartbeat ms
    KEYS[3] clock    HASH "seen": last ms a worker reached Redis; "grace_until":
                     no stale flush before this ms (after a Redis stall)
    ARGV[1] key prefix; per-id key: owned:<process id> (ZSET job id -> timeout ms)
    ARGV[2] process id
    ARGV[3] stall ms: a longer gap between workers' calls means Redis stalled
    ARGV[4] grace ms: how long flushes wait after a stall
  Output: { jobs Redis says this process holds, Redis time ms }
]]
local rcall = redis.call
local procs_key, beats_key, clock_key = KEYS[1], KEYS[2], KEYS[3]
local prefix, proc = ARGV[1], ARGV[2]
local stall_ms, grace_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
-- @include now_ms
-- @include touch_process
-- @include observe_clock

local owned_key = prefix .. "owned:" .. proc
local now = now_ms()
observe_clock(clock_key, now, stall_ms, grace_ms)
touch_process(procs_key, beats_key, proc, owned_key, now)
return { rcall("ZCARD", owned_key), now }
