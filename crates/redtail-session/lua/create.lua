-- Creates sessions, each recorded in its tag's index atomically; one call creates the sessions
-- of several callers (redtail_core::BatchedScript), each on its own.
-- A session is one string, its format written and read in src/header.rs: a JSON header, a
-- newline, then the application's data. The client formats all of it but the server's time (the
-- creation time), which goes between ARG_HEAD and ARG_TAIL.
-- Its keys, arguments and reply are named in src/script.rs (SessionKey, CreateArg, CreateReply).
-- The index is a sorted set: id -> expiry s. Times in the reply are Unix seconds.
-- Numbers reach redis.call as strings formatted once: Lua formats a number argument with
-- printf("%.17g"), which was a good part of this script's cost.
local now, now_s = nil, nil
return batch(function(KEYS, ARGV)
  if not now then
    now = tonumber(redis.call('TIME')[1])
    now_s = string.format('%d', now)
  end
  local expires = now + tonumber(ARGV[ARG_LIFETIME_S])
  local expires_s = string.format('%d', expires)
  -- With a cap, the user's other sessions are read before anything is written: their keys are
  -- known only from the index, and a script that reaches a key it did not declare fails there
  -- (on a cluster while the slot migrates), which must happen before it has changed anything.
  local cap = tonumber(ARGV[ARG_CAP])
  local mine = {}
  if cap > 0 then
    -- Only this user's live sessions count (an index can be shared by users whose tags collide).
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[K_INDEX], '(' .. now_s, '+inf')) do
      local h = read_header(get_session(ARGV[ARG_PREFIX] .. member))
      if h and h.u == ARGV[ARG_USER] and member ~= ARGV[ARG_ID] then mine[#mine + 1] = {member, h.c} end
    end
  end

  redis.call('SET', KEYS[K_SESSION], ARGV[ARG_HEAD] .. now_s .. ARGV[ARG_TAIL], 'EXAT', expires_s)
  -- The index keeps live sessions only: expired ids are pruned on every write.
  redis.call('ZREMRANGEBYSCORE', KEYS[K_INDEX], '-inf', now_s)
  redis.call('ZADD', KEYS[K_INDEX], expires_s, ARGV[ARG_ID])

  -- The new session is the newest: the oldest others go until the user has `cap` with it.
  -- Oldest first; sessions created in the same second are ordered by id.
  local evicted = 0
  if cap > 0 then
    table.sort(mine, function(x, y) if x[2] == y[2] then return x[1] < y[1] end return x[2] < y[2] end)
    for i = 1, #mine - (cap - 1) do
      redis.call('DEL', ARGV[ARG_PREFIX] .. mine[i][1])
      redis.call('ZREM', KEYS[K_INDEX], mine[i][1])
      evicted = evicted + 1
    end
  end

  -- The index lives exactly as long as its longest-lived session: its expiry only ever moves
  -- later, and an index without one (just created) gets one.
  local ttl = redis.call('TTL', KEYS[K_INDEX])
  if ttl < 0 or now + ttl < expires then
    redis.call('EXPIREAT', KEYS[K_INDEX], expires_s)
  end
  -- The reply in CreateReply order, by a constructor: filling a table by index rehashes it as it
  -- grows, a cost per caller.
  return {now, expires, evicted}
end)
