-- Ends one session and removes it from its index.
-- Keys and arguments: src/script.rs (SessionKey, InvalidateArg). Returns 1 when a session ended.
local ended = redis.call('DEL', KEYS[K_SESSION])
redis.call('ZREM', KEYS[K_INDEX], ARGV[ARG_ID])
return ended
