--[[
  Remove a schedule: its definition and its next fire time. A fire racing
  with it finds no next fire time and submits nothing (fire_schedule.lua).
  Input:
    KEYS[1] schedules  ZSET schedule name -> next fire time ms
    ARGV[1] key prefix; per-name key schedule:<name>
    ARGV[2] name
  Output: 1 removed; 0 there was no such schedule
]]
local rcall = redis.call
local removed = rcall("ZREM", KEYS[1], ARGV[2])
local deleted = rcall("DEL", ARGV[1] .. "schedule:" .. ARGV[2])
if removed + deleted > 0 then return 1 end
return 0
