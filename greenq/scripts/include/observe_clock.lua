-- observe_clock(now): note that a worker process reached Redis at `now`, and
-- return the moment until which stale flushes must wait.
-- Live workers reach Redis at least once a second (their tick). A longer gap
-- means Redis served no worker for a while: it was paused, stalled or
-- stopped (or no worker ran). Every heartbeat was held up as well, so a
-- silence that spans the gap is no evidence of death: flushes then wait
-- `grace_ms` for live processes to heartbeat again.
-- Needs in scope: rcall, clock_key (HASH "seen", "grace_until"), stall_ms, grace_ms.
local function observe_clock(now)
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
