--[[
  How many jobs each of some processes holds in this partition, read-only
  (greenq/browse.py: a process's running count over every partition).
  Input:
    ARGV[1] key prefix; per-id key: owned:<process id> (ZSET)
    ARGV[2..] process ids (a page's worth)
  Output: one count per process id
]]
local counts = {}
for i = 2, #ARGV do counts[#counts + 1] = redis.call("ZCARD", ARGV[1] .. "owned:" .. ARGV[i]) end
return counts
