-- Replaces a session's data, only if the session still exists: a request that finishes after
-- logout must never bring the session back.
-- KEYS[1] session; ARGV[1] data. Returns 1 when updated, 0 when the session is gone.
local value = redis.pcall('GET', KEYS[1])
local header, split = read_header(value)
if not header then return 0 end
redis.call('SET', KEYS[1], string.sub(value, 1, split) .. ARGV[1], 'KEEPTTL')
return 1
