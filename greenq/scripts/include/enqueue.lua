-- enqueue(queue, id, job_key, resource): make a job runnable, or park it at
-- the end of its resource's FIFO when another job holds that resource. The
-- first job to wait behind a holder notes the holder's resource in `held`
-- (see include/release.lua), or, when the holder's record vanished before
-- anything waited for it, takes the resource over.
--   queue  the including script's keys, as for release()
-- Needs include/release before it; uses nothing of the including script.
local rcall = redis.call
local function enqueue(queue, id, job_key, resource)
  if resource and resource ~= "" and rcall("HSETNX", queue.locks, resource, id) == 0 then
    rcall("HSET", job_key, "state", "waiting")
    rcall("HINCRBY", queue.counts, "waiting", 1)
    if rcall("RPUSH", queue.prefix .. "wait:" .. resource, id) == 1 then
      local holder = rcall("HGET", queue.locks, resource)
      if rcall("EXISTS", queue.prefix .. "job:" .. holder) == 1 then
        rcall("HSET", queue.held, holder, resource)
      else
        release(queue, resource, holder)  -- hands it to this job, the only one waiting
      end
    end
  else
    rcall("HSET", job_key, "state", "pending")
    rcall("LPUSH", queue.pending, id)
  end
end
