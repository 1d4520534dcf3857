-- Creates sessions, each recorded in its tag's index atomically; one call creates the sessions
-- of several callers (redtail_core::BatchedScript), each on its own.
-- A session is one string, its format written and read in src/header.rs: a JSON header, a
-- newline, then the application's data. The client formats all of it but the server's time (the
-- creation time), which goes between ARGV[1] and ARGV[2].
-- KEYS[1] session, KEYS[2] index of the sessions under this routing tag (sorted set: id -> expiry s)
-- ARGV[1] the value up to the creation time, ARGV[2] the value after it, ARGV[3] lifetime s
-- (the idle lifetime, capped by the absolute one), ARGV[4] session id, ARGV[5] session key prefix
-- (a session key is prefix .. id), ARGV[6] cap on sessions (0: none), ARGV[7] user id
-- Returns {now, expires, evicted count}, times in Unix seconds.
-- Numbers reach redis.call as strings formatted once: Lua formats a number argument with
-- printf("%.17g"), which was a good part of this script's cost.
local now, now_s = nil, nil
return batch(function(KEYS, ARGV)
  if not now then
    now = tonumber(redis.call('TIME')[1])
    now_s = string.format('%d', now)
  end
  local expires = now + tonumber(ARGV[3])
  local expires_s = string.format('%d', expires)
  -- With a cap, the user's other sessions are read before anything is written: their keys are
  -- known only from the index, and a script that reaches a key it did not declare fails there
  -- (on a cluster while the slot migrates), which must happen before it has changed anything.
  local cap = tonumber(ARGV[6])
  local mine = {}
  if cap > 0 then
    -- Only this user's live sessions count (an index can be shared by users whose tags collide).
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now_s, '+inf')) do
      local h = read_header(get_session(ARGV[5] .. member))
      if h and h.u == ARGV[7] and member ~= ARGV[4] then mine[#mine + 1] = {member, h.c} end
    end
  end

  redis.call('SET', KEYS[1], ARGV[1] .. now_s .. ARGV[2], 'EXAT', expires_s)
  -- The index keeps live sessions only: expired ids are pruned on every write.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_s)
  redis.call('ZADD', KEYS[2], expires_s, ARGV[4])

  -- The new session is the newest: the oldest others go until the user has `cap` with it.
  -- Oldest first; sessions created in the same second are ordered by id.
  local evicted = 0
  if cap > 0 then
    table.sort(mine, function(x, y) if x[2] == y[2] then return x[1] < y[1] end return x[2] < y[2] end)
    for i = 1, #mine - (cap - 1) do
      redis.call('DEL', ARGV[5] .. mine[i][1])
      redis.call('ZREM', KEYS[2], mine[i][1])
      evicted = evicted + 1
    end
  end

  -- The index lives exactly as long as its longest-lived session: its expiry only ever moves
  -- later, and an index without one (just created) gets one.
  local ttl = redis.call('TTL', KEYS[2])
  if ttl < 0 or now + ttl < expires then
    redis.call('EXPIREAT', KEYS[2], expires_s)
  end
  return {now, expires, evicted}
end)
