-- observe_clock(clock_key, now, stall_ms, grace_ms): note that a worker
-- process reached Redis at `now`, and return the moment until which stale
-- flushes must wait.
-- Live workers reach Redis at least once a second (their tick). A longer gap
-- (over `stall_ms`) means Redis served no worker for a while: it was paused,
-- stalled or stopped (or no worker ran). Every heartbeat was held up as
-- well, so a silence that spans the gap is no evidence of death: flushes
-- then wait `grace_ms` for live processes to heartbeat again.
--   clock_key  HASH "seen": last ms a worker reached Redis; "grace_until"
-- Uses nothing of the including script.
local rcall = redis.call
local function observe_clock(clock_key, now, stall_ms, grace_ms)
  local clock = rcall("HMGET", clock_key, "seen", "grace_until")
  local seen, grace_until = tonumber(clock[1]), tonumber(clock[2]) or 0
  if seen and now - seen > stall_ms and now + grace_ms > grace_until then
    grace_until = now + grace_ms
    rcall("HSET", clock_key, "seen", now, "grace_until", grace_until)
  else
    rcall("HSET", clock_key, "seen", now)
  end
  return grace_until
end
