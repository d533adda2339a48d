-- enqueue(id, job_key, resource): make a job runnable, or park it at the
-- end of its resource's FIFO when another job holds that resource.
-- Needs in scope: rcall, prefix, pending_key, locks_key, counts_key.
local function enqueue(id, job_key, resource)
  if resource and resource ~= "" and rcall("HSETNX", locks_key, resource, id) == 0 then
    rcall("RPUSH", prefix .. "wait:" .. resource, id)
    rcall("HSET", job_key, "state", "waiting")
    rcall("HINCRBY", counts_key, "waiting", 1)
  else
    rcall("HSET", job_key, "state", "pending")
    rcall("LPUSH", pending_key, id)
  end
end
