-- coalesce_target(queue, task, resource): the id of the newest job of
-- `resource` that has not started yet (the last id in its wait list, else
-- the holder; state pending, waiting or scheduled), if it is of `task`;
-- nil otherwise. A cancelled one does not count. A coalescing submit
-- replaces that job's params instead of adding one (submit.lua).
--   queue  the including script's keys: prefix, locks
local rcall = redis.call
local NOT_STARTED = { pending = true, waiting = true, scheduled = true }
local function coalesce_target(queue, task, resource)
  local holder = rcall("HGET", queue.locks, resource)
  if not holder then return nil end
  local newest = rcall("LINDEX", queue.prefix .. "wait:" .. resource, -1) or holder
  local f = redis.pcall("HMGET", queue.prefix .. "job:" .. newest, "state", "task")
  if f.err or not NOT_STARTED[f[1]] or f[2] ~= task then return nil end
  return newest
end
