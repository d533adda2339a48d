--[[
  One page of locked resources, read-only (greenq/browse.py): HSCAN over
  `locks` from a scan cursor, skipping the first `skip` entries of that
  cursor's batch (where the previous page stopped inside it), with each
  resource's holder state, wait-list length and first waiting ids. HSCAN
  gives no order; the same cursor on an unchanged hash gives the same batch.
  Bounded: at most `rounds` HSCAN calls of COUNT `hint`.
  Input:
    KEYS[1] locks    HASH resource id -> holding job id
    ARGV[1] key prefix; per-id keys: job:<id>, wait:<resource>
    ARGV[2] scan cursor, ARGV[3] skip, ARGV[4] want, ARGV[5] hint, ARGV[6] rounds
    ARGV[7] waiting ids to return per resource
  Output: { rows, next scan cursor, next skip, done, HLEN locks }
    rows: flat, per resource: resource, holder, holder state (false: no
          record), waiting count, { next waiting ids }
]]
local rcall = redis.call
local locks_key = KEYS[1]
local prefix, cursor, skip = ARGV[1], ARGV[2], tonumber(ARGV[3])
local want, hint, rounds, peek = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7])

local rows, found = {}, 0
for _ = 1, rounds do
  local reply = rcall("HSCAN", locks_key, cursor, "COUNT", hint)
  local batch = reply[2]
  local entries = #batch / 2
  for i = skip + 1, entries do
    local resource, holder = batch[2 * i - 1], batch[2 * i]
    local state = redis.pcall("HGET", prefix .. "job:" .. holder, "state")
    if type(state) ~= "string" then state = false end
    local wait_key = prefix .. "wait:" .. resource
    rows[#rows + 1] = resource
    rows[#rows + 1] = holder
    rows[#rows + 1] = state
    rows[#rows + 1] = rcall("LLEN", wait_key)
    rows[#rows + 1] = rcall("LRANGE", wait_key, 0, peek - 1)
    found = found + 1
    if found >= want then
      if i < entries then return { rows, cursor, i, 0, rcall("HLEN", locks_key) } end
      local done = 0
      if reply[1] == "0" then done = 1 end
      return { rows, reply[1], 0, done, rcall("HLEN", locks_key) }
    end
  end
  skip = 0
  cursor = reply[1]
  if cursor == "0" then return { rows, "0", 0, 1, rcall("HLEN", locks_key) } end
end
return { rows, cursor, 0, 0, rcall("HLEN", locks_key) }
