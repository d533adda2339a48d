-- now_ms(): Redis' own clock in epoch milliseconds (never a worker's clock).
-- Uses nothing of the including script.
local rcall = redis.call
local function now_ms()
  local t = rcall("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
