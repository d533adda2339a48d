--[[
  One page of running jobs, read-only (greenq/browse.py): HSCAN over
  `beats` (the processes that hold jobs) from a scan cursor, skipping the
  first `skip` processes of that batch, and each process's jobs from
  `offset` in its owned set (by timeout, then id). Bounded: at most
  `rounds` HSCAN calls of COUNT `hint`, and `want` jobs.
  Input:
    KEYS[1] beats    HASH process id -> last heartbeat ms
    KEYS[2] workers  HASH process id -> JSON {host, pid, role, ...}
    KEYS[3] counts   HASH "active" counter
    ARGV[1] key prefix; per-id keys: owned:<process id> (ZSET job id -> timeout ms), job:<id>
    ARGV[2] scan cursor, ARGV[3] skip, ARGV[4] offset, ARGV[5] want, ARGV[6] hint,
    ARGV[7] rounds
  Output: { rows, about, next cursor, next skip, next offset, done, now ms, active }
    rows: flat, per job: id, process, last beat ms, timeout ms, task, resource,
          started ms, attempts (false: none)
    about: flat pairs, process id -> its registration JSON (false: none)
]]
local rcall = redis.call
local beats_key, workers_key, counts_key = KEYS[1], KEYS[2], KEYS[3]
local prefix, cursor = ARGV[1], ARGV[2]
local skip, offset, want, hint, rounds =
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
-- @include now_ms

local rows, about, found = {}, {}, 0
local function reply(next_cursor, next_skip, next_offset, done)
  return { rows, about, next_cursor, next_skip, next_offset, done, now_ms(),
           tonumber(rcall("HGET", counts_key, "active")) or 0 }
end

for _ = 1, rounds do
  local scanned = rcall("HSCAN", beats_key, cursor, "COUNT", hint)
  local batch = scanned[2]
  local procs = #batch / 2
  for i = skip + 1, procs do
    local proc, beat = batch[2 * i - 1], batch[2 * i]
    local owned_key = prefix .. "owned:" .. proc
    local ids = rcall("ZRANGE", owned_key, offset, offset + want - found - 1, "WITHSCORES")
    if #ids > 0 then
      about[#about + 1] = proc
      about[#about + 1] = rcall("HGET", workers_key, proc)
    end
    for j = 1, #ids, 2 do
      local f = redis.pcall("HMGET", prefix .. "job:" .. ids[j], "task", "res", "started",
                            "attempts")
      if f.err then f = {} end
      rows[#rows + 1] = ids[j]
      rows[#rows + 1] = proc
      rows[#rows + 1] = beat
      rows[#rows + 1] = ids[j + 1]
      for k = 1, 4 do rows[#rows + 1] = f[k] or false end
      found = found + 1
    end
    if found >= want then
      local taken = offset + #ids / 2
      if rcall("ZCARD", owned_key) > taken then return reply(cursor, i - 1, taken, 0) end
      if i < procs then return reply(cursor, i, 0, 0) end
      if scanned[1] == "0" then return reply("0", 0, 0, 1) end
      return reply(scanned[1], 0, 0, 0)
    end
    offset = 0
  end
  skip = 0
  cursor = scanned[1]
  if cursor == "0" then return reply("0", 0, 0, 1) end
end
return reply(cursor, 0, 0, 0)
