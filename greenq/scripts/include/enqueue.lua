-- enqueue(queue, id, job_key, resource): make a job runnable, or park it at
-- the end of its resource's FIFO when another job holds that resource.
--   queue  the including script's keys: { prefix = key prefix (per-id key
--          wait:<resource>), pending = LIST, locks = HASH, counts = HASH }
-- Uses nothing else of the including script.
local rcall = redis.call
local function enqueue(queue, id, job_key, resource)
  if resource and resource ~= "" and rcall("HSETNX", queue.locks, resource, id) == 0 then
    rcall("RPUSH", queue.prefix .. "wait:" .. resource, id)
    rcall("HSET", job_key, "state", "waiting")
    rcall("HINCRBY", queue.counts, "waiting", 1)
  else
    rcall("HSET", job_key, "state", "pending")
    rcall("LPUSH", queue.pending, id)
  end
end
