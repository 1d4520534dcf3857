-- Moves a session to a new id: same data and expiry, the old id dead at once, the index updated.
-- KEYS[1] old session, KEYS[2] new session, KEYS[3] index
-- ARGV[1] old id, ARGV[2] new id. Returns 1 when rotated, 0 when the old session is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local expires = redis.call('EXPIRETIME', KEYS[1])
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[3], expires, ARGV[2])
return 1
