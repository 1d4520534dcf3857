-- Slides a session's expiry forward, writing only when it moves by more than a threshold.
-- Its keys and arguments are named in src/script.rs (SessionKey, ExtendArg).
-- Returns the expiry in Unix seconds (new or unchanged), or false when the session is gone.
local value = redis.pcall('GET', KEYS[K_SESSION])
local header, split = read_header(value)
if not header or not header.e or not header.c then return false end
local now = tonumber(redis.call('TIME')[1])
local idle = tonumber(ARGV[ARG_IDLE_S])
if header.r == 1 then idle = tonumber(ARGV[ARG_REMEMBER_IDLE_S]) end
local wanted = now + idle
if header.a and wanted > header.c + header.a then wanted = header.c + header.a end
if wanted - (header.c + header.e) <= tonumber(ARGV[ARG_FRACTION]) * idle then
  return header.c + header.e
end
header.s = now - header.c
header.e = wanted - header.c
redis.call('SET', KEYS[K_SESSION], cjson.encode(header) .. string.sub(value, split), 'EXAT', wanted)
redis.call('ZADD', KEYS[K_INDEX], 'XX', wanted, ARGV[ARG_ID])
local last = redis.call('ZRANGE', KEYS[K_INDEX], -1, -1, 'WITHSCORES')
if last[2] then redis.call('EXPIREAT', KEYS[K_INDEX], last[2]) end
return wanted
