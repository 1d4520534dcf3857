-- Prepended to check.lua and adjust.lua: how a sliding log's entries are written.
-- An entry is "<ms>:<n>", n counting up from 1 within each ms and written with 10 digits, so
-- that within one ms the newest entry is also the greatest member. A refund (ZPOPMAX) then takes
-- the newest entries, and a new entry never repeats one that is there (a repeated member would
-- not be counted).

-- Adds `count` entries at `now` (ms) to the log at `key`. `newest` is the log's last entry and
-- its score ({member, score}, or an empty table), when the caller has read it already.
local function log_add(key, now, count, newest)
  local now_s = string.format('%d', now)
  local top = nil
  if newest == nil or (newest[2] and tonumber(newest[2]) > now) then
    -- Not read, or later than now (a client clock behind the log's): ask for now's newest.
    top = redis.call('ZRANGE', key, now_s, now_s, 'BYSCORE', 'REV', 'LIMIT', 0, 1)[1]
  elseif newest[2] and tonumber(newest[2]) == now then
    top = newest[1]
  end
  local n = top and tonumber(string.sub(top, #now_s + 2)) or 0
  -- Many members per ZADD, in chunks that unpack() can take.
  local args = {}
  for c = 1, count do
    args[#args + 1] = now_s
    args[#args + 1] = now_s .. ':' .. string.format('%010d', n + c)
    if #args >= 1000 or c == count then
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
end
