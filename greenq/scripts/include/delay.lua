-- delay_job(queue, id, due): job `id` waits in the delayed set until `due`
-- (ms, Redis' clock). When it is due before every job that waited there
-- and pending is empty, an empty id pushed into pending wakes one idle
-- worker (blocked in BLMOVE, which Redis would end only on its own cron),
-- whose fetch learns the new earliest due time and sets its timer
-- (Worker._wake_for_due); fetch.lua skips the empty id, counted as
-- "skipped" like a cancelled id. While pending holds ids no worker is
-- blocked, and the next fetch learns the time anyway.
--   queue  the including script's keys: delayed = ZSET, pending = LIST,
--          counts = HASH
-- Uses nothing else of the including script.
--
-- wake_a_worker(queue): push that empty id if pending is empty (else no
-- worker is blocked); wake.lua calls it when a delayed job came due.
local rcall = redis.call
local function wake_a_worker(queue)
  if rcall("LLEN", queue.pending) == 0 then
    rcall("LPUSH", queue.pending, "")
    rcall("HINCRBY", queue.counts, "skipped", 1)
  end
end

local function delay_job(queue, id, due)
  local first = rcall("ZRANGE", queue.delayed, 0, 0, "WITHSCORES")[2]
  if not first or due < tonumber(first) then wake_a_worker(queue) end
  rcall("ZADD", queue.delayed, due, id)
end
