-- bury(job_key): a cancelled job's id left the last list it was in (a
-- fetch or a release skipped it): its record, kept meanwhile so that the
-- skip could tell it from a lost one, now expires as end_job would have
-- let it (cancel.lua wrote the ms in the record's "keep").
-- Uses nothing of the including script.
local rcall = redis.call
local function bury(job_key)
  local keep = tonumber(rcall("HGET", job_key, "keep")) or 0
  if keep > 0 then rcall("PEXPIRE", job_key, keep) else rcall("DEL", job_key) end
end
