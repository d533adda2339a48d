--[[
  Count, read-only, the ids of a LIST or ZSET whose record names task
  `task` (greenq/browse_actions.py count_matching: how many jobs a bulk
  action would hit). Walks at most `scan` slots from `pos` (bounded work
  per call; the caller loops with the position returned). Empty ids
  (wake-ups) are not counted, nor, when asked, cancelled ids (pending
  lists keep them in place; the failed list has none, and its walk reads
  only the task field: one HGET per id, the cost of a count).
  Input:
    KEYS[1] the LIST or ZSET of job ids
    ARGV[1] key prefix; per-id key job:<id>
    ARGV[2] "list" or "zset"
    ARGV[3] pos: slots already walked from index 0
    ARGV[4] scan: slots to walk at most
    ARGV[5] task id to count ("" any)
    ARGV[6] "1": skip cancelled ids
  Output: { matched, next pos, size of the key }
]]
local rcall = redis.call
local key = KEYS[1]
local prefix, kind = ARGV[1], ARGV[2]
local pos, scan, task = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local skip_cancelled = ARGV[6] == "1"
local CHUNK = 1000
-- Hoisted out of the loop: half the time per id went to building the key
-- and looking up redis.pcall.
local job_prefix, rpcall = prefix .. "job:", redis.pcall

local size
if kind == "list" then size = rcall("LLEN", key) else size = rcall("ZCARD", key) end
local matched, walked = 0, 0
while walked < scan and pos < size do
  local n = math.min(CHUNK, scan - walked, size - pos)
  local ids
  if kind == "list" then
    ids = rcall("LRANGE", key, pos, pos + n - 1)
  else
    ids = rcall("ZRANGE", key, pos, pos + n - 1)
  end
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    if id ~= "" then
      local name
      if skip_cancelled then
        local f = rpcall("HMGET", job_prefix .. id, "task", "state")
        if not f.err and f[2] ~= "cancelled" then name = f[1] end
      else
        name = rpcall("HGET", job_prefix .. id, "task")
      end
      -- Not a string: no record, or not a hash (an error reply).
      if type(name) == "string" and (name == task or task == "") then matched = matched + 1 end
    end
  end
  pos = pos + #ids
  walked = walked + #ids
end
return { matched, pos, size }
