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
-- end_in_place(queue, id, job_key, watched): job `id` was cancelled while its
-- id sits in a list (pending, handoff, a wait list; see cancel.lua): the
-- same end, except that its record gets no expiry yet, only the ms it is to
-- live ("keep") once a fetch or release skips the id (include/bury.lua).
--
--   queue  the including script's { prefix, keep = ms, grace = ms, now = ms }
-- Uses nothing else of the including script.
local rcall = redis.call
local INLINE_RECORD_MAX = 8192

-- How long an ended record stays: result_ttl, and at least the grace when
-- someone waits on it.
local function kept_ms(queue, watched)
  if watched then return math.max(queue.keep, queue.grace) end
  return queue.keep
end

-- The record rides along (msgpack [id, HGETALL], first byte 0x92, which no
-- UTF-8 id starts with), so waiters need no read; past 8 KB only the id
-- goes, and the listener reads the record.
local function publish_ended(queue, id, job_key)
  local message = cmsgpack.pack({ id, rcall("HGETALL", job_key) })
  if #message > INLINE_RECORD_MAX then message = id end
  rcall("PUBLISH", queue.prefix .. "ended", message)
end

-- queue.now and queue.keep as text, formatted once per call: a number
-- argument is formatted again on every redis.call (about 0.2 us).
local function texts(queue)
  local text = queue.text
  if not text then
    text = { now = string.format("%d", queue.now), keep = string.format("%d", queue.keep) }
    queue.text = text
  end
  return text
end

local function end_job(queue, id, job_key, state, watched, fields)
  if state ~= "failed" and queue.keep <= 0 and not watched then
    rcall("DEL", job_key)  -- result_ttl 0: as if it never was, as before
    return
  end
  local text = texts(queue)
  rcall("HSET", job_key, "state", state, "ended", text.now, unpack(fields))
  if watched then publish_ended(queue, id, job_key) end
  if state ~= "failed" then
    local keep = kept_ms(queue, watched)
    if keep <= 0 then
      rcall("DEL", job_key)
    else
      rcall("PEXPIRE", job_key, keep == queue.keep and text.keep or keep)
    end
  end
end

local function end_in_place(queue, id, job_key, watched)
  rcall("HSET", job_key, "state", "cancelled", "ended", queue.now, "keep", kept_ms(queue, watched))
  if watched then publish_ended(queue, id, job_key) end
end
