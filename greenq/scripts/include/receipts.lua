-- Receipts make a finish idempotent. The committer sends a finish again when
-- a broken connection hid the reply; by then the job's record may be gone
-- because this very finish landed, or because a stale flush took the lease
-- and another run finished the job. A receipt (field "<id> <lease>" in
-- receipts:<process id>) tells the two apart: the re-send returns the code
-- the first send got. The committer drops the receipts (drop_receipts) once
-- it has seen the replies of every finish it sent; the key expires after a
-- day when a process dies idle, and a flush that reclaims a dead process'
-- jobs deletes it.
--
-- open_receipts(prefix, proc): the receipts of process `proc` (per-id key
-- receipts:<proc> under key prefix `prefix`), as a table of functions:
--   drop(flag)                  "1": forget the earlier receipts first
--   check(job_key, id, token)   check_lease, then the receipts: the job's
--                               fields when `proc` still holds lease `token`;
--                               otherwise nil and the code an earlier send of
--                               this finish got, or else check_lease's code
--   note(id, token, code)       remember this finish's code...
--   keep()                      ...and write what was noted, once per call
-- Needs include/check_lease before it; uses nothing of the including script.
local RECEIPT_TTL_MS = 86400000
local CODE_TEXT = { [1] = "1", [4] = "4", [0] = "0", [-1] = "-1" }  -- formatted once

local function open_receipts(prefix, proc)
  local rcall = redis.call
  local key = prefix .. "receipts:" .. proc
  local fields = {}
  local receipts = {}

  function receipts.drop(flag)
    if flag == "1" then rcall("DEL", key) end
  end

  function receipts.check(job_key, id, token)
    local f, code = check_lease(job_key, token, proc)
    if f then return f, code end
    return nil, tonumber(rcall("HGET", key, id .. " " .. token)) or code
  end

  function receipts.note(id, token, code)
    local n = #fields
    fields[n + 1], fields[n + 2] = id .. " " .. token, CODE_TEXT[code] or code
  end

  function receipts.keep()
    if #fields > 0 then
      rcall("HSET", key, unpack(fields))
      rcall("PEXPIRE", key, RECEIPT_TTL_MS)
    end
  end

  return receipts
end
