-- check_lease(job_key, token, proc): the job's { state, lease, owner,
-- resource, retries, cancel, watch, task, started, queued } when `proc` still holds lease `token`;
-- otherwise nil and a code: 0 the record is gone (or not a job hash), -1
-- the lease was taken away (fencing).
-- Uses nothing of the including script.
local rcall = redis.call
local function check_lease(job_key, token, proc)
  -- One HMGET, no TYPE first: it answers nils for a missing key and an
  -- error for a key of another type. This runs once per finished job.
  local f = redis.pcall("HMGET", job_key, "state", "lease", "owner", "res", "retries", "cancel",
                        "watch", "task", "started", "queued")
  if f.err then return nil, 0 end
  if f[1] ~= "active" or f[2] ~= token or f[3] ~= proc then
    if not f[1] and rcall("EXISTS", job_key) == 0 then return nil, 0 end
    return nil, -1
  end
  return f, 1
end
