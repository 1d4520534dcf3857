-- Prepended to check.lua and adjust.lua: how a sliding log's entries are written.
-- An entry is "<ms>:<d><n>": n counts up from 1 within each ms, and d is how many digits n has,
-- so that members sort by n (1 < 9 < 10 as "11" < "19" < "210") and within one ms the newest
-- entry is also the greatest member. A refund (ZPOPMAX) then takes the newest entries, and a new
-- entry never repeats one that is there (a repeated member would not be counted).

-- Adds `count` entries at `now` (ms) to the log at `key`, which holds `used` entries: they are
-- numbered from used + 1. The entries of one ms are numbered in a row from the log's size when
-- the first was added (nothing else leaves while the ms lasts, and a refund takes the greatest),
-- so a new number is never one that is there.
local function log_add(key, now, count, used)
  local now_s = string.format('%d', now)
  if count == 1 then
    local digits = string.format('%d', used + 1)
    redis.call('ZADD', key, now_s, now_s .. ':' .. #digits .. digits)
    return
  end
  local function member(i)
    local digits = string.format('%d', i)
    return now_s .. ':' .. #digits .. digits
  end
  -- Many members per ZADD, in chunks that unpack() can take.
  local args = {}
  for c = 1, count do
    args[#args + 1] = now_s
    args[#args + 1] = member(used + c)
    if #args >= 1000 or c == count then
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
end
