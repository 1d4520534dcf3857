-- Replaces a session's data, only if the session still exists: a request that finishes after
-- logout must never bring the session back.
-- KEYS[1] session hash; ARGV[1] data. Returns 1 when updated, 0 when the session is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[1])
return 1
