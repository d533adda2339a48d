--[[
  One page of a LIST or ZSET of ids, read-only, for the dashboard
  (greenq/browse.py): walks at most `scan` slots from `pos` and returns the
  ids that match, each with some fields of its record (HMGET: never a whole
  record, never params unless asked). Bounded work per call: the caller
  loops, passing back the position returned, while it wants more.
  An id with no record (or a key that is not a hash) is listed with nil
  fields and the state "missing", unless a task filter is given (it names
  no task) or cancelled ids are skipped (it is not queued either).
  Input:
    KEYS[1] the LIST or ZSET of ids (pending, handoff, wait:<resource>, failed,
            delayed, schedules)
    ARGV[1] record key prefix: the queue prefix plus "job:" or "schedule:"
    ARGV[2] "list" or "zset"
    ARGV[3] "left": index 0 first (a zset: lowest score first); "right": the
            last index first
    ARGV[4] pos: slots already walked from that end
    ARGV[5] want: ids to return at most
    ARGV[6] scan: slots to walk at most
    ARGV[7] task id an id's record must name ("" any)
    ARGV[8] "1": skip cancelled ids and empty ids (wake-ups, include/delay.lua)
    ARGV[9..] record fields to return ("state" must be among them for ARGV[8])
  Output: { rows, next pos, size of the key, done (1: the walk reached the end) }
    rows: flat, per id: id, score ("" in a list), one value per field (false: none)
]]
local rcall = redis.call
local key = KEYS[1]
local record_prefix, kind, from = ARGV[1], ARGV[2], ARGV[3]
local pos, want, scan = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local task, skip_cancelled = ARGV[7], ARGV[8] == "1"
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
local state_at, task_at = 0, 0
for i, name in ipairs(fields) do
  if name == "state" then state_at = i end
  if name == "task" then task_at = i end
end
if task ~= "" and task_at == 0 then
  return redis.error_reply("browse_page: a task filter needs the field task")
end

local size
if kind == "list" then size = rcall("LLEN", key) else size = rcall("ZCARD", key) end
-- Reads are chunked: an unfiltered page reads about what it returns.
local chunk = want
if task ~= "" or skip_cancelled then chunk = math.max(want * 4, 500) end
chunk = math.min(chunk, scan)

local rows, found, walked = {}, 0, 0
local rpcall = redis.pcall  -- hoisted: a filtered walk calls it per id
while found < want and walked < scan and pos < size do
  local n = math.min(chunk, scan - walked, size - pos)
  local first, last = pos, pos + n - 1
  if from == "right" then first, last = -(pos + n), -(pos + 1) end
  local ids
  if kind == "list" then
    ids = rcall("LRANGE", key, first, last)
  else
    ids = rcall("ZRANGE", key, first, last, "WITHSCORES")
  end
  local step = kind == "list" and 1 or 2
  local count = #ids / step
  if count == 0 then break end  -- the key shrank under us: nothing more to read
  for j = 1, count do
    local at = j
    if from == "right" then at = count - j + 1 end
    local id = ids[(at - 1) * step + 1]
    local score = kind == "zset" and ids[at * 2] or ""
    local values = rpcall("HMGET", record_prefix .. id, unpack(fields))
    if values.err then values = {} end
    local keep = true
    if task ~= "" and values[task_at] ~= task then keep = false end
    if skip_cancelled and (id == "" or values[state_at] == "cancelled") then keep = false end
    if keep then
      if state_at > 0 and not values[state_at] then values[state_at] = "missing" end
      rows[#rows + 1] = id
      rows[#rows + 1] = score
      for f = 1, #fields do rows[#rows + 1] = values[f] or false end
      found = found + 1
    end
    pos = pos + 1
    walked = walked + 1
    if found >= want then break end
  end
end
local done = 0
if pos >= size then done = 1 end
return { rows, pos, size, done }
