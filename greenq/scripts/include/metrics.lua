-- Metrics, counted by the scripts that end, retry and cancel jobs, so that
-- every process's work is counted and no restart loses any
-- (greenq/metrics.py reads them):
--   KEYS metrics  HASH, per task: jobs by outcome, and histograms of how
--                 long perform ran ("d") and how long the job waited from
--                 queued to started ("w")
--   KEYS history  HASH, a ring of HISTORY_MINUTES one-minute slots: jobs by
--                 outcome in each minute
-- A script call adds its jobs up in Lua tables and writes once, at
-- flush(): a batch of 50 finishes of one task costs about ten HINCRBYs,
-- not fifty times a handful.
--
-- open_metrics(metrics_key, history_key, now): a table of functions:
--   count(task, outcome)     outcome "succeeded", "failed", "retried" or "cancelled"
--   observe(task, kind, us)  kind "d" or "w"; us: microseconds (a number;
--                            nil or negative is ignored)
--   observe_wait(task, started, queued)  "w" from the record's "started"
--                            and "queued" ms (strings; either missing: nothing)
--   flush()                  write what was added up
-- metrics fields, tab-separated with the task id last (it may hold anything):
--   "o\t<outcome>\t<task>"   jobs that ended so
--   "<kind>\t<i>\t<task>"    observations in bucket i, 1..#BOUNDS_US + 1
--                            (not cumulative; the last bucket is +Inf)
--   "<kind>\tsum\t<task>"    their total in microseconds
-- history fields, for slot i = minute % HISTORY_MINUTES (minute: epoch ms
-- / 60000): "m<i>" the minute the slot holds now, "<o><i>" its jobs of
-- outcome o (first letter: s, f, r, c). A slot found holding an older
-- minute is reset before it counts. Bounded: 5 fields per slot.
-- Keep BOUNDS_US and HISTORY_MINUTES equal to greenq/config.py's
-- HISTOGRAM_BOUNDS and HISTORY_MINUTES (tests/test_metrics.py checks).
-- Uses nothing of the including script.
local BOUNDS_US = { 10000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
                    60000000, 300000000 }
local HISTORY_MINUTES = 1440

local OUTCOME_LETTER = { succeeded = "s", failed = "f", retried = "r", cancelled = "c" }

local function open_metrics(metrics_key, history_key, now)
  local rcall = redis.call
  -- adds[task][kind][key]: what flush() adds to field "<kind>\t<key>\t<task>";
  -- kind "o" (key: outcome), "d" or "w" (key: bucket or "sum"). Field names
  -- are built at flush, once each, not per job.
  local adds, minute_counts, any = {}, {}, false
  local metrics = {}

  local function add(task, kind, key, n)
    local per_task = adds[task]
    if not per_task then
      per_task = { o = {}, d = {}, w = {} }
      adds[task] = per_task
    end
    local per_kind = per_task[kind]
    per_kind[key] = (per_kind[key] or 0) + n
    any = true
  end

  function metrics.count(task, outcome)
    add(task or "", "o", outcome, 1)
    local letter = OUTCOME_LETTER[outcome] or string.sub(outcome, 1, 1)
    minute_counts[letter] = (minute_counts[letter] or 0) + 1
  end

  function metrics.observe(task, kind, us)
    if not us or us < 0 then return end
    us = math.floor(us)
    local bucket = #BOUNDS_US + 1
    for i = 1, #BOUNDS_US do
      if us <= BOUNDS_US[i] then bucket = i break end
    end
    task = task or ""
    add(task, kind, bucket, 1)
    add(task, kind, "sum", us)
  end

  function metrics.observe_wait(task, started, queued)
    started, queued = tonumber(started), tonumber(queued)
    if started and queued then metrics.observe(task, "w", (started - queued) * 1000) end
  end

  function metrics.flush()
    if not any then return end
    for task, per_task in pairs(adds) do
      for kind, per_kind in pairs(per_task) do
        for key, n in pairs(per_kind) do
          rcall("HINCRBY", metrics_key, kind .. "\t" .. key .. "\t" .. task, n)
        end
      end
    end
    local minute = math.floor(now / 60000)
    local slot = minute % HISTORY_MINUTES
    if tonumber(rcall("HGET", history_key, "m" .. slot)) ~= minute then
      rcall("HSET", history_key, "m" .. slot, minute, "s" .. slot, 0, "f" .. slot, 0,
            "r" .. slot, 0, "c" .. slot, 0)
    end
    for letter, n in pairs(minute_counts) do rcall("HINCRBY", history_key, letter .. slot, n) end
    adds, minute_counts, any = {}, {}, false
  end

  return metrics
end
