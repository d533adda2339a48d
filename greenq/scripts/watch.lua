--[[
  Watch a job for wait(): return its record at once when the job already
  ended; otherwise mark the record, so that the script that ends the job
  publishes its id on the queue's `ended` channel (pub/sub) for the waiters.
  The caller subscribes to that channel before it calls this script, so an
  end that comes after this call is never missed.
  Input:
    KEYS[1] job:<id>  HASH the job's record
    ARGV[1..] the states a job does not leave by itself (greenq.job.ENDED)
  Output: false (nil) when there is no record (unknown id, expired,
          deleted; a key of another type counts as none); the record as
          HGETALL's flat list when its state is one of ARGV; else an empty
          table, and the record now has watch = "1"
]]
local rcall = redis.call
local job_key = KEYS[1]

if rcall("EXISTS", job_key) == 0 then return false end
-- pcall: a key of another type (a collision, a hand-made key) is not a job.
local state = redis.pcall("HGET", job_key, "state")
if type(state) == "table" then return false end
for i = 1, #ARGV do
  if state == ARGV[i] then return rcall("HGETALL", job_key) end
end
rcall("HSET", job_key, "watch", "1")
return {}
