-- Slides a session's expiry forward, writing only when it moves by more than a threshold.
-- KEYS[1] session, KEYS[2] index
-- ARGV[1] session id, ARGV[2] fraction of the idle lifetime the expiry must move by to be
-- written, ARGV[3] idle lifetime s of standard sessions, ARGV[4] of remember-me sessions.
-- Returns the expiry in Unix seconds (new or unchanged), or false when the session is gone.
local value = redis.pcall('GET', KEYS[1])
local header, split = read_header(value)
if not header or not header.e or not header.c then return false end
local now = tonumber(redis.call('TIME')[1])
local idle = tonumber(ARGV[3])
if header.r == 1 then idle = tonumber(ARGV[4]) end
local wanted = now + idle
if header.a and wanted > header.c + header.a then wanted = header.c + header.a end
if wanted - (header.c + header.e) <= tonumber(ARGV[2]) * idle then
  return header.c + header.e
end
header.s = now - header.c
header.e = wanted - header.c
redis.call('SET', KEYS[1], cjson.encode(header) .. string.sub(value, split), 'EXAT', wanted)
redis.call('ZADD', KEYS[2], 'XX', wanted, ARGV[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last[2] then redis.call('EXPIREAT', KEYS[2], last[2]) end
return wanted
