-- Replaces a session's data, only if the session still exists: a request that finishes after
-- logout must never bring the session back.
-- KEYS[1] session; ARGV[1] data. Returns 1 when updated, 0 when the session is gone.
local value = redis.pcall('GET', KEYS[1])
if type(value) ~= 'string' then return 0 end
local split = string.find(value, '\n', 1, true)
if not split then return 0 end
redis.call('SET', KEYS[1], string.sub(value, 1, split) .. ARGV[1], 'KEEPTTL')
return 1
