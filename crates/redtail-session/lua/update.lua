-- Replaces a session's data, only if the session still exists: a request that finishes after
-- logout must never bring the session back.
-- Keys and arguments: src/script.rs (UpdateKey, UpdateArg). Returns 1 when updated, 0 when the
-- session is gone.
local value = redis.pcall('GET', KEYS[K_SESSION])
local header, split = read_header(value)
if not header then return 0 end
redis.call('SET', KEYS[K_SESSION], string.sub(value, 1, split) .. ARGV[ARG_DATA], 'KEEPTTL')
return 1
