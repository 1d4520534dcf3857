-- Moves a session to a new id: same data and expiry, the old id dead at once, the index updated.
-- Keys and arguments: src/script.rs (RotateKey, RotateArg). Returns 1 when rotated, 0 when the
-- old session is gone.
if redis.call('EXISTS', KEYS[K_OLD]) == 0 then return 0 end
local expires = redis.call('EXPIRETIME', KEYS[K_OLD])
redis.call('RENAME', KEYS[K_OLD], KEYS[K_NEW])
redis.call('ZREM', KEYS[K_INDEX], ARGV[ARG_OLD_ID])
redis.call('ZADD', KEYS[K_INDEX], expires, ARGV[ARG_NEW_ID])
return 1
