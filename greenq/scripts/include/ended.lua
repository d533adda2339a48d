-- end_job(queue, id, job_key, state, watched, fields): job `id` reached an
-- end state ("succeeded", "cancelled" or "failed"); `fields` (a flat table,
-- may be empty) are written with it. Then its record is kept or dropped: a
-- failed one stays (the caller put it in the failed list); a succeeded or
-- cancelled one expires after queue.keep ms (result_ttl), or goes at once
-- when that is 0, unless someone waits on it (`watched`, the record's
-- "watch" mark, set by watch.lua): then it stays at least queue.grace ms,
-- so its waiters can read how it ended. A watched job's id and record are
-- published on the channel <prefix>ended, which wakes its waiters
-- (greenq/waiting.py).
--
--   queue  the including script's { prefix, keep = ms, grace = ms, now = ms }
-- Uses nothing else of the including script.
local rcall = redis.call
local INLINE_RECORD_MAX = 8192
local function expire_ended(queue, job_key, keep, watched)
  if watched then keep = math.max(keep, queue.grace) end
  if keep > 0 then
    rcall("PEXPIRE", job_key, keep)
  else
    rcall("DEL", job_key)
  end
end

local function end_job(queue, id, job_key, state, watched, fields)
  if state ~= "failed" and queue.keep <= 0 and not watched then
    rcall("DEL", job_key)  -- result_ttl 0: as if it never was, as before
    return
  end
  rcall("HSET", job_key, "state", state, "ended", queue.now, unpack(fields))
  if watched then
    -- The record rides along (msgpack [id, HGETALL], first byte 0x92, which
    -- no UTF-8 id starts with), so waiters need no read; past 8 KB only
    -- the id goes, and the listener reads the record.
    local message = cmsgpack.pack({ id, rcall("HGETALL", job_key) })
    if #message > INLINE_RECORD_MAX then message = id end
    rcall("PUBLISH", queue.prefix .. "ended", message)
  end
  if state ~= "failed" then expire_ended(queue, job_key, queue.keep, watched) end
end
