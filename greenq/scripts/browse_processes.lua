--[[
  One page of live worker processes, read-only (greenq/browse.py): HSCAN
  over `workers` (the registry, heartbeat.lua) from a scan cursor, skipping
  the first `skip` entries of that batch; a process not heard from within
  `gone` ms is not live and not listed. Bounded: at most `rounds` HSCAN
  calls of COUNT `hint`.
  Input:
    KEYS[1] workers  HASH process id -> JSON {host, pid, role, capacity, started_ms, ...}
    KEYS[2] alive    ZSET process id -> last heartbeat ms
    ARGV[1] key prefix; per-id key: owned:<process id>
    ARGV[2] scan cursor, ARGV[3] skip, ARGV[4] want, ARGV[5] hint, ARGV[6] rounds,
    ARGV[7] gone ms
  Output: { rows, next cursor, next skip, done, now ms, live processes }
    rows: flat, per process: id, JSON, last beat ms, jobs it holds in this partition
]]
local rcall = redis.call
local workers_key, alive_key = KEYS[1], KEYS[2]
local prefix, cursor = ARGV[1], ARGV[2]
local skip, want, hint, rounds, gone =
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
-- @include now_ms

local now = now_ms()
local rows, found = {}, 0
local function reply(next_cursor, next_skip, done)
  -- Live processes are few; ZRANGEBYSCORE rather than ZCOUNT keeps docs/acl.md's user.
  return { rows, next_cursor, next_skip, done, now,
           #rcall("ZRANGEBYSCORE", alive_key, now - gone, "+inf") }
end

for _ = 1, rounds do
  local scanned = rcall("HSCAN", workers_key, cursor, "COUNT", hint)
  local batch = scanned[2]
  local entries = #batch / 2
  for i = skip + 1, entries do
    local proc = batch[2 * i - 1]
    local beat = tonumber(rcall("ZSCORE", alive_key, proc))
    if beat and beat >= now - gone then
      rows[#rows + 1] = proc
      rows[#rows + 1] = batch[2 * i]
      rows[#rows + 1] = beat
      rows[#rows + 1] = rcall("ZCARD", prefix .. "owned:" .. proc)
      found = found + 1
      if found >= want then
        if i < entries then return reply(cursor, i, 0) end
        if scanned[1] == "0" then return reply("0", 0, 1) end
        return reply(scanned[1], 0, 0)
      end
    end
  end
  skip = 0
  cursor = scanned[1]
  if cursor == "0" then return reply("0", 0, 1) end
end
return reply(cursor, 0, 0)
