-- Creates a session and records it in its user's index, atomically.
-- KEYS[1] session hash, KEYS[2] index of the sessions under this routing tag (sorted set: id -> expiry ms)
-- ARGV[1] idle lifetime ms, ARGV[2] absolute lifetime ms (0: none), ARGV[3] user id,
-- ARGV[4] data, ARGV[5] remember me (0/1), ARGV[6] device, ARGV[7] session id,
-- ARGV[8] session key prefix (the session key is prefix .. id), ARGV[9] cap on sessions (0: none)
-- Returns {now, expires, absolute deadline, evicted count}; times in Unix ms from the server clock.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local idle = tonumber(ARGV[1])
local absolute = 0
local expires = now + idle
if tonumber(ARGV[2]) > 0 then
  absolute = now + tonumber(ARGV[2])
  if expires > absolute then expires = absolute end
end
redis.call('HSET', KEYS[1], 'u', ARGV[3], 'd', ARGV[4], 'c', now, 's', now, 'e', expires,
  'a', absolute, 't', idle, 'r', ARGV[5], 'v', ARGV[6])
redis.call('PEXPIREAT', KEYS[1], expires)

-- The index keeps live sessions only: expired ids are pruned on every write.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], expires, ARGV[7])

local evicted = 0
local cap = tonumber(ARGV[9])
if cap > 0 then
  local members = redis.call('ZRANGE', KEYS[2], 0, -1)
  while #members > cap do
    -- Evict the session created first.
    local oldest, oldest_created = nil, nil
    for _, member in ipairs(members) do
      local created = tonumber(redis.call('HGET', ARGV[8] .. member, 'c') or '0')
      if member ~= ARGV[7] and (oldest == nil or created < oldest_created) then
        oldest, oldest_created = member, created
      end
    end
    redis.call('DEL', ARGV[8] .. oldest)
    redis.call('ZREM', KEYS[2], oldest)
    evicted = evicted + 1
    members = redis.call('ZRANGE', KEYS[2], 0, -1)
  end
end

-- The index lives exactly as long as its longest-lived session.
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], last[2])
return {now, expires, absolute, evicted}
