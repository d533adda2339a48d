-- release(queue, resource, id): job `id` is done with `resource`; hand it to
-- the next waiting job (which becomes runnable) or free it. Waiting ids
-- whose record vanished are dropped so a ghost never holds a resource.
--   queue  the including script's keys: { prefix = key prefix (per-id keys
--          job:<id>, wait:<resource>), pending = LIST, locks = HASH,
--          counts = HASH }
-- Uses nothing else of the including script.
local rcall = redis.call
local function release(queue, resource, id)
  if not resource or resource == "" then return end
  if rcall("HGET", queue.locks, resource) ~= id then return end
  local wait_key = queue.prefix .. "wait:" .. resource
  while true do
    local next_id = rcall("LPOP", wait_key)
    if not next_id then
      rcall("HDEL", queue.locks, resource)
      return
    end
    rcall("HINCRBY", queue.counts, "waiting", -1)
    local next_key = queue.prefix .. "job:" .. next_id
    if rcall("TYPE", next_key).ok == "hash" then
      rcall("HSET", queue.locks, resource, next_id)
      rcall("HSET", next_key, "state", "pending")
      rcall("LPUSH", queue.pending, next_id)
      return
    end
  end
end
