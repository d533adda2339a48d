--[[
  Delete failed jobs, oldest first, records included. Bounded: at most
  `limit` jobs per call.
  Input:
    KEYS[1] failed   LIST of failed job ids, oldest first
    ARGV[1] key prefix; per-id key: job:<id>
    ARGV[2] limit
  Output: how many jobs were deleted
]]
local rcall = redis.call
local failed_key = KEYS[1]
local prefix, limit = ARGV[1], tonumber(ARGV[2])

local ids = rcall("LPOP", failed_key, limit)
if not ids then return 0 end
for _, id in ipairs(ids) do rcall("DEL", prefix .. "job:" .. id) end
return #ids
