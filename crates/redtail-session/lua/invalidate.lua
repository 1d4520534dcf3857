-- Ends one session and removes it from its index.
-- KEYS[1] session, KEYS[2] index; ARGV[1] session id. Returns 1 when a session ended.
local ended = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return ended
