-- requeue(queue, id): put failed job `id`, already taken off the failed
-- list, back through the same door as a submit (include/enqueue.lua): a job
-- whose resource is held waits behind the holder. It keeps the retries it
-- has left. Returns true, or false when its record is gone (then the id is
-- simply dropped).
--   queue  as for enqueue()
-- Needs include/release and include/enqueue before it; uses nothing of the
-- including script. Shared by retry_failed.lua and failed_select.lua, so
-- both retry a job the same way.
-- @include now_ms
local function requeue(queue, id)
  local job_key = queue.prefix .. "job:" .. id
  if redis.call("TYPE", job_key).ok ~= "hash" then return false end
  redis.call("HDEL", job_key, "owner", "started", "ended")
  queue.now = queue.now or now_ms()
  redis.call("HSET", job_key, "queued", queue.now)
  enqueue(queue, id, job_key, redis.call("HGET", job_key, "res"))
  return true
end
