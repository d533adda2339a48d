-- Receipts make a finish idempotent. The committer sends a finish again when
-- a broken connection hid the reply; by then the job's record may be gone
-- because this very finish landed, or because a stale flush took the lease
-- and another run finished the job. A receipt (field "<id> <lease>" in
-- receipts:<process id>) tells the two apart: the re-send returns the code
-- the first send got. The committer drops the receipts (drop_receipts) once
-- it has seen the replies of every finish it sent; the key expires after a
-- day when a process dies idle, and a flush that reclaims a dead process'
-- jobs deletes it.
-- Needs in scope: rcall, prefix, proc, check_lease.
local receipts_key = prefix .. "receipts:" .. proc
local RECEIPT_TTL_MS = 86400000
local receipt_fields = {}

local function drop_receipts(flag)
  if flag == "1" then rcall("DEL", receipts_key) end
end

-- The code an earlier send of this finish got, or nil.
local function earlier_outcome(id, token)
  return tonumber(rcall("HGET", receipts_key, id .. " " .. token))
end

-- check_lease, then the receipts: the job's fields when `proc` still holds
-- lease `token`; otherwise nil and the code an earlier send of this finish
-- got, or else check_lease's code.
local function check_finish(job_key, id, token)
  local f, code = check_lease(job_key, token, proc)
  if f then return f, code end
  return nil, earlier_outcome(id, token) or code
end

local function note_outcome(id, token, code)
  local n = #receipt_fields
  receipt_fields[n + 1], receipt_fields[n + 2] = id .. " " .. token, code
end

local function keep_receipts()
  if #receipt_fields > 0 then
    rcall("HSET", receipts_key, unpack(receipt_fields))
    rcall("PEXPIRE", receipts_key, RECEIPT_TTL_MS)
  end
end
