--[[
  Heartbeat every job one process runs, in O(log n) whatever their number:
  liveness is kept per process, and a job turns stale when its process has
  been silent longer than the job's timeout.
  Input:
    KEYS[1] procs    ZSET process id -> ms when its first job can turn stale
    KEYS[2] beats    HASH process id -> last heartbeat ms
    ARGV[1] key prefix; per-id key: owned:<process id> (ZSET job id -> timeout ms)
    ARGV[2] process id
  Output: { jobs Redis says this process holds, Redis time ms }
]]
local rcall = redis.call
local procs_key, beats_key = KEYS[1], KEYS[2]
local prefix, proc = ARGV[1], ARGV[2]
-- @include now_ms
-- @include touch_process

local owned_key = prefix .. "owned:" .. proc
local now = now_ms()
touch_process(proc, owned_key, now)
return { rcall("ZCARD", owned_key), now }
