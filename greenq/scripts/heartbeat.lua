--[[
  Heartbeat every job one process runs, in O(log n) whatever their number:
  liveness is kept per process, and a job turns stale when its process has
  been silent longer than the job's timeout. Also keeps the process in the
  registry of live worker processes (what `greenq inspect` and stats()
  "workers" read), and prunes a few entries of processes gone silent.
  Input:
    KEYS[1] procs    ZSET process id -> ms when its first job can turn stale
    KEYS[2] beats    HASH process id -> last heartbeat ms
    KEYS[3] clock    HASH "seen": last ms a worker reached Redis; "grace_until":
                     no stale flush before this ms (after a Redis stall)
    KEYS[4] workers  HASH process id -> JSON {host, pid, role, capacity, started_ms, ...}
    KEYS[5] alive    ZSET process id -> last heartbeat ms, every registered process
    ARGV[1] key prefix; per-id keys: owned:<process id> (ZSET job id -> timeout ms),
            cancels:<process id> (SET of its running job ids a cancel reached)
    ARGV[2] process id
    ARGV[3] stall ms: a longer gap between workers' calls means Redis stalled
    ARGV[4] grace ms: how long flushes wait after a stall
    ARGV[5] registration: "" leaves the registry alone (a process not yet
            registered); "-" removes this process (a clean stop); else its
            JSON, stored when the process is not in alive (first beat, or
            after it was pruned)
    ARGV[6] gone ms: entries of alive older than this are pruned, at most
            PRUNE per call
  Output: { jobs Redis says this process holds, Redis time ms, ids of its
          running jobs a cancel reached (cancel.lua; they stay listed until
          the job's finish, so a lost reply costs nothing) }
]]
local rcall = redis.call
local procs_key, beats_key, clock_key, workers_key, alive_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, proc = ARGV[1], ARGV[2]
local stall_ms, grace_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local registration, gone_ms = ARGV[5], tonumber(ARGV[6])
local PRUNE = 10
-- @include now_ms
-- @include touch_process
-- @include observe_clock

local owned_key = prefix .. "owned:" .. proc
local now = now_ms()
observe_clock(clock_key, now, stall_ms, grace_ms)
touch_process(procs_key, beats_key, proc, owned_key, now)

if registration == "-" then
  rcall("ZREM", alive_key, proc)
  rcall("HDEL", workers_key, proc)
elseif registration ~= "" then
  if rcall("ZADD", alive_key, now, proc) == 1 then
    rcall("HSET", workers_key, proc, registration)
  end
end
local gone = rcall("ZRANGEBYSCORE", alive_key, "-inf", "(" .. (now - gone_ms), "LIMIT", 0, PRUNE)
if gone[1] then
  rcall("ZREM", alive_key, unpack(gone))
  rcall("HDEL", workers_key, unpack(gone))
end
return { rcall("ZCARD", owned_key), now, rcall("SMEMBERS", prefix .. "cancels:" .. proc) }
