-- check_lease(job_key, token, proc): the job's { state, lease, owner,
-- resource, retries } when `proc` still holds lease `token`; otherwise nil
-- and a code: 0 the record is gone, -1 the lease was taken away (fencing).
-- Uses nothing of the including script.
local rcall = redis.call
local function check_lease(job_key, token, proc)
  if rcall("TYPE", job_key).ok ~= "hash" then return nil, 0 end
  local f = rcall("HMGET", job_key, "state", "lease", "owner", "res", "retries")
  if f[1] ~= "active" or f[2] ~= token or f[3] ~= proc then return nil, -1 end
  return f, 1
end
