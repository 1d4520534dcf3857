-- Creates a session and records it in its tag's index, atomically.
-- A session is one string: a JSON header, a newline, then the application's data as given.
-- The header holds u (user id), c (created, Unix seconds on the server clock), then as seconds
-- after c: s (last seen), e (expires), a (absolute deadline, absent for none); r = 1 for
-- "remember me" (absent otherwise) and v (device, optional). Small on purpose: it is stored once
-- per session.
-- KEYS[1] session, KEYS[2] index of the sessions under this routing tag (sorted set: id -> expiry s)
-- ARGV[1] idle lifetime s, ARGV[2] absolute lifetime s (0: none), ARGV[3] user id,
-- ARGV[4] data, ARGV[5] remember me (0/1), ARGV[6] device JSON (empty: none), ARGV[7] session id,
-- ARGV[8] session key prefix (a session key is prefix .. id), ARGV[9] cap on sessions (0: none)
-- Returns {now, expires, evicted count}, times in Unix seconds.
local now = tonumber(redis.call('TIME')[1])
local expires = now + tonumber(ARGV[1])
-- The header is formatted directly (cheaper than building a table for cjson); the user id is
-- JSON-escaped by cjson, and the device arrives as JSON the client has already serialized.
local header = '{"u":' .. cjson.encode(ARGV[3]) .. ',"c":' .. now .. ',"s":0'
if tonumber(ARGV[2]) > 0 then
  local absolute = now + tonumber(ARGV[2])
  if expires > absolute then expires = absolute end
  header = header .. ',"a":' .. (absolute - now)
end
header = header .. ',"e":' .. (expires - now)
if ARGV[5] == '1' then header = header .. ',"r":1' end
if ARGV[6] ~= '' then header = header .. ',"v":' .. ARGV[6] end
redis.call('SET', KEYS[1], header .. '}\n' .. ARGV[4], 'EXAT', expires)

-- The index keeps live sessions only: expired ids are pruned on every write.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], expires, ARGV[7])

local evicted = 0
local cap = tonumber(ARGV[9])
if cap > 0 then
  -- Only this user's sessions count (an index can be shared by users whose tags collide).
  local mine = {}
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local h = read_header(redis.pcall('GET', ARGV[8] .. member))
    if h and h.u == ARGV[3] then mine[#mine + 1] = {member, h.c} end
  end
  -- Oldest first; a stable order for sessions created in the same second.
  table.sort(mine, function(x, y) if x[2] == y[2] then return x[1] < y[1] end return x[2] < y[2] end)
  for i = 1, #mine - cap do
    if mine[i][1] ~= ARGV[7] then
      redis.call('DEL', ARGV[8] .. mine[i][1])
      redis.call('ZREM', KEYS[2], mine[i][1])
      evicted = evicted + 1
    end
  end
end

-- The index lives exactly as long as its longest-lived session: NX sets a first expiry, GT only
-- ever moves it later (GT alone never sets one on a key without a TTL).
redis.call('EXPIREAT', KEYS[2], expires, 'NX')
redis.call('EXPIREAT', KEYS[2], expires, 'GT')
return {now, expires, evicted}
