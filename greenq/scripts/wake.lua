--[[
  Wake an idle worker for a delayed job that came due. An idle worker
  blocks in BLMOVE on pending, and Redis ends such a wait only every 100 ms
  or so (its timeouts run on the server's cron), so a process that learned
  from its fetch when the next delayed job is due sets a timer, and this
  call, at that time, pushes an empty id into pending: the longest-waiting
  blocked worker of any process wakes, and its fetch promotes the job
  (fetch.lua, which skips the empty id and counts it like a cancelled one).
  Nothing is pushed while pending holds ids (no worker is blocked then) or
  when nothing is due yet by Redis' clock.
  Input:
    KEYS[1] delayed  ZSET job id -> ms it becomes runnable
    KEYS[2] pending  LIST of runnable job ids
    KEYS[3] counts   HASH "skipped": ids in pending that are no job
  Output: ms until the earliest delayed job is due (0: it is due, and a
          worker was woken or will find it); -1 when none waits
]]
local rcall = redis.call
local delayed_key, pending_key, counts_key = KEYS[1], KEYS[2], KEYS[3]
-- @include now_ms
-- @include delay

local first = rcall("ZRANGE", delayed_key, 0, 0, "WITHSCORES")[2]
if not first then return -1 end
local wait = tonumber(first) - now_ms()
if wait > 0 then return math.ceil(wait) end
wake_a_worker({ pending = pending_key, counts = counts_key })
return 0
