-- Slides a session's expiry forward, writing only when it moves by more than a threshold.
-- KEYS[1] session hash, KEYS[2] user index
-- ARGV[1] session id, ARGV[2] fraction of the idle lifetime the expiry must move by to be written
-- Returns the expiry in Unix ms (new or unchanged), or false when the session is gone.
local fields = redis.call('HMGET', KEYS[1], 'e', 'a', 't')
if not fields[1] then return false end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expires, absolute, idle = tonumber(fields[1]), tonumber(fields[2]), tonumber(fields[3])
local wanted = now + idle
if absolute > 0 and wanted > absolute then wanted = absolute end
if wanted - expires <= tonumber(ARGV[2]) * idle then
  return expires
end
redis.call('HSET', KEYS[1], 's', now, 'e', wanted)
redis.call('PEXPIREAT', KEYS[1], wanted)
redis.call('ZADD', KEYS[2], 'XX', wanted, ARGV[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[2], last[2]) end
return wanted
