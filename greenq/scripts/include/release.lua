-- release(resource, id): job `id` is done with `resource`; hand it to the
-- next waiting job (which becomes runnable) or free it. Waiting ids whose
-- record vanished are dropped so a ghost never holds a resource.
-- Needs in scope: rcall, prefix, pending_key, locks_key, counts_key.
local function release(resource, id)
  if not resource or resource == "" then return end
  if rcall("HGET", locks_key, resource) ~= id then return end
  local wait_key = prefix .. "wait:" .. resource
  while true do
    local next_id = rcall("LPOP", wait_key)
    if not next_id then
      rcall("HDEL", locks_key, resource)
      return
    end
    rcall("HINCRBY", counts_key, "waiting", -1)
    local next_key = prefix .. "job:" .. next_id
    if rcall("TYPE", next_key).ok == "hash" then
      rcall("HSET", locks_key, resource, next_id)
      rcall("HSET", next_key, "state", "pending")
      rcall("LPUSH", pending_key, next_id)
      return
    end
  end
end
