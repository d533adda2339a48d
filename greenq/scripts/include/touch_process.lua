-- touch_process(procs_key, beats_key, proc, owned_key, beat_ms): record that
-- `proc` was alive at beat_ms and set the moment its first job can turn
-- stale (beat + the smallest timeout among the jobs it holds). A process
-- holding nothing is forgotten: it has nothing a flush could reclaim.
--   procs_key  ZSET process id -> ms when its first job can turn stale
--   beats_key  HASH process id -> last heartbeat ms
--   owned_key  ZSET job id -> timeout ms, the jobs `proc` holds
-- Uses nothing of the including script.
local rcall = redis.call
local function touch_process(procs_key, beats_key, proc, owned_key, beat_ms)
  local first = rcall("ZRANGE", owned_key, 0, 0, "WITHSCORES")
  if first[1] then
    rcall("HSET", beats_key, proc, beat_ms)
    rcall("ZADD", procs_key, beat_ms + tonumber(first[2]), proc)
  else
    rcall("ZREM", procs_key, proc)
    rcall("HDEL", beats_key, proc)
  end
end
