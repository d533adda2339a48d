-- reclaim(queue, out, proc, id, why): take job `id` from process `proc`, which
-- died or hung, as a crash: with retries left it is retried with one retry
-- fewer and keeps its resource (so the next job of that resource cannot
-- overtake it): at the back of the pending list, or, when its task has a
-- retry policy in queue.policies (include/backoff.lua; the n-th retry for a
-- job of n attempts), in the delayed set as "scheduled" until its wait is
-- over (output "delay"); otherwise to the failed list, and
-- its resource goes to the next waiting job. A job a cancel reached
-- (cancel.lua marked it) ends "cancelled" instead, not retried. Its error
-- text is `why`, unless its process left a note for this very lease
-- (note.lua). Appends the job's output row to `out` (9 values: id, "retry",
-- "delay", "fail" or "cancel", task, resource,
-- encoding, params, retries left, attempts, error) and returns true; returns
-- false when `proc` no longer runs the job (it ended, or runs elsewhere now),
-- or when its record vanished (eviction, a manual DEL): then a resource it
-- held goes to the next job waiting, and "active" counts it down at once.
-- The caller removes `id` from proc's owned set, and counts "active" down by
-- the number of true returns.
--   queue  as for release() and end_job(), plus failed = LIST of failed job ids,
--          delayed = ZSET job id -> ms it becomes runnable, policies = HASH
--          task id -> retry policy, metrics = open_metrics(...) (counts the
--          outcome; how long a dead process' run took is not known)
-- Needs include/release, include/ended, include/backoff, include/delay and
-- include/metrics before it; uses nothing of the including script.
local rcall = redis.call
local function reclaim(queue, out, proc, id, why)
  local job_key = queue.prefix .. "job:" .. id
  if rcall("TYPE", job_key).ok ~= "hash" then
    release_vanished(queue, id)
    rcall("HINCRBY", queue.counts, "active", -1)
    return false
  end
  local f = rcall("HMGET", job_key, "state", "owner", "task", "res", "enc",
                  "params", "retries", "attempts", "lease", "note", "note_lease", "cancel",
                  "watch")
  if f[1] ~= "active" or f[2] ~= proc then return false end
  if f[10] and f[11] == f[9] then why = f[10] end
  local retries = tonumber(f[7]) or 0
  local outcome = "fail"
  if f[12] then
    queue.metrics.count(f[3], "cancelled")
    outcome = "cancel"
    rcall("SREM", queue.prefix .. "cancels:" .. proc, id)
    release(queue, f[4], id)
    end_job(queue, id, job_key, "cancelled", f[13], { "error", why })
  elseif retries > 0 then
    retries = retries - 1
    queue.metrics.count(f[3], "retried")
    rcall("HDEL", job_key, "unknown_since")  -- a run of a worker that knew its task
    local wait = f[3] and backoff_ms(rcall("HGET", queue.policies, f[3]), tonumber(f[8]) or 1) or 0
    if wait > 0 then
      outcome = "delay"
      rcall("HSET", job_key, "state", "scheduled", "retries", retries, "error", why,
            "queued", queue.now + wait)
      delay_job(queue, id, queue.now + wait)
    else
      outcome = "retry"
      rcall("HSET", job_key, "state", "pending", "retries", retries, "error", why,
            "queued", queue.now)
      rcall("LPUSH", queue.pending, id)
    end
  else
    queue.metrics.count(f[3], "failed")
    rcall("RPUSH", queue.failed, id)
    release(queue, f[4], id)
    end_job(queue, id, job_key, "failed", f[13], { "error", why })
  end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = id, outcome, f[3], f[4], f[5]
  out[n + 6], out[n + 7], out[n + 8], out[n + 9] = f[6], retries, f[8], why
  return true
end
