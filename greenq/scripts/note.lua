--[[
  Leave a note on running jobs of one process: the error text that a stale
  flush reclaiming one of them records instead of its own "no heartbeat".
  The lifeline thread notes a job that ran past its time limit while the
  gevent hub was blocked (it cannot be interrupted there; its process then
  ends itself, or stops heartbeating). Lease-checked like complete.lua, and
  a note holds for the lease it was written under only.
  Input:
    KEYS[1..] job:<id> of each job
    ARGV[1] process id
    ARGV[2..] pairs, one per key: lease token, note text
  Output: one code per job: 1 noted; 0 no record; -1 lease lost
]]
local rcall = redis.call
local proc = ARGV[1]
-- @include check_lease

local codes = {}
for i = 1, #KEYS do
  local token, text = ARGV[2 * i], ARGV[2 * i + 1]
  local f, code = check_lease(KEYS[i], token, proc)
  if f then rcall("HSET", KEYS[i], "note", text, "note_lease", token) end
  codes[i] = code
end
return codes
