-- release(queue, resource, id): job `id` is done with `resource`; hand it to
-- the next waiting job (which becomes runnable) or free it. Waiting ids
-- whose record vanished are dropped so a ghost never holds a resource, and
-- so are cancelled ones (cancel.lua leaves them in place: no scan).
--
-- release_vanished(queue, id): job `id` turned out to have no record any
-- more (evicted, deleted by hand) where it was still referenced. If jobs
-- wait for a resource it held, hand that resource on; returns the resource,
-- or nil when nothing waited (then the first job to wait for it finds the
-- holder gone, see include/enqueue.lua).
--
-- The record says which resource a job holds, so a job without a record
-- needs another way back to it: `held` maps a holder to its resource for
-- exactly the holders that have jobs waiting behind them (enqueue writes the
-- entry with the first waiter, release moves it on). Uncontended resources
-- cost nothing; a contended one one hash entry, O(1) to keep.
--
--   queue  the including script's keys: { prefix = key prefix (per-id keys
--          job:<id>, wait:<resource>), pending = LIST, locks = HASH
--          resource -> holder, counts = HASH, held = HASH holder -> resource }
-- Uses nothing else of the including script.
-- @include bury
local rcall = redis.call
local function release(queue, resource, id)
  if not resource or resource == "" then return end
  if rcall("HGET", queue.locks, resource) ~= id then return end
  local wait_key = queue.prefix .. "wait:" .. resource
  local next_id = rcall("LPOP", wait_key)
  if not next_id then
    rcall("HDEL", queue.locks, resource)
    return
  end
  rcall("HDEL", queue.held, id)
  while next_id do
    local next_key = queue.prefix .. "job:" .. next_id
    -- A string for a job record; false when it is gone, an error reply
    -- (a table) when the key holds something else.
    local state = redis.pcall("HGET", next_key, "state")
    if state == "cancelled" then
      bury(next_key)  -- its cancel counted it out of "waiting" already
    else
      rcall("HINCRBY", queue.counts, "waiting", -1)
      if type(state) == "string" then
        rcall("HSET", queue.locks, resource, next_id)
        rcall("HSET", next_key, "state", "pending")
        rcall("LPUSH", queue.pending, next_id)
        if rcall("LLEN", wait_key) > 0 then rcall("HSET", queue.held, next_id, resource) end
        return
      end
    end
    next_id = rcall("LPOP", wait_key)
  end
  rcall("HDEL", queue.locks, resource)
end

local function release_vanished(queue, id)
  local resource = rcall("HGET", queue.held, id)
  if resource then release(queue, resource, id) end
  return resource
end
