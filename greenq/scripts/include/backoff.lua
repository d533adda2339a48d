-- backoff_ms(policy, n): ms the n-th retry of a job waits under its task's
-- retry policy `policy` ("delay_ms backoff max_ms", the retry_policies HASH
-- value each worker process writes for its tasks, see
-- Broker.publish_retry_policies); 0 (retry at once) without one. Drawn
-- uniformly from [d/2, d], d = min(max_ms, delay_ms * backoff ^ (n - 1)),
-- as registry.Task.retry_wait does for a run that raised. Redis before 7.0
-- seeds Lua's math.random the same way for every script call (7.0 no longer
-- does), so the first draw of a call seeds it from TIME's microseconds:
-- jobs found dead by separate calls do not come back together, whatever
-- the server.
-- Uses nothing of the including script.
local backoff_seeded = false
local function backoff_ms(policy, n)
  if not policy then return 0 end
  local delay, factor, longest = string.match(policy, "^(%S+) (%S+) (%S+)$")
  delay, factor, longest = tonumber(delay), tonumber(factor), tonumber(longest)
  if not (delay and factor and longest) or delay <= 0 then return 0 end
  if not backoff_seeded then
    local t = redis.call("TIME")
    -- Below 2^31: math.randomseed takes an int.
    math.randomseed((tonumber(t[1]) % 2000) * 1000000 + tonumber(t[2]))
    backoff_seeded = true
  end
  -- factor ^ a large n is inf in Lua, and min() takes the cap then.
  local d = math.min(longest, delay * factor ^ math.max(n - 1, 0))
  return math.floor(d / 2 + math.random() * d / 2 + 0.5)
end
