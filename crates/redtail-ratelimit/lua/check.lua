-- Checks several policies for one subject and charges all of them, or none; one call checks
-- the subjects of several callers (redtail_core::BatchedScript), each on its own.
-- Time is the server's (TIME), in milliseconds, so client clocks never matter; unless ARGV[3]
-- holds the client's time (for hosts that forbid TIME), which is then clamped so that stored
-- time never goes backwards.
-- KEYS[1] the subject's block key; KEYS[1 + i] the state of policy i (all keys share a hash tag).
-- ARGV[1] cost; ARGV[2] is 1 to charge (0: only look, for shadow checks and peeks); ARGV[3] the
-- client's time in ms or ''; then for each policy: algorithm (g: GCRA, s: sliding log,
-- f: fixed window), limit, period ms, burst.
-- Returns {blocked ms, then for each policy: allowed (1/0), remaining, retry after ms, reset after ms}.
-- Every policy's state is read with the block key in one MGET (a sliding log, a sorted set,
-- reads as nil there and is read on its own): the fewer commands, the more checks a second.
-- Numbers go to redis.call as strings where they can (Lua formats a number argument with
-- printf("%.17g")).

-- The server's time, read once for the whole call.
local server_now = nil

-- The time this check runs at.
local function clock(KEYS, ARGV, n)
  if ARGV[3] == '' then
    if not server_now then
      local time = redis.call('TIME')
      server_now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    end
    return server_now
  end
  local now = tonumber(ARGV[3])
  -- A client clock behind the one that wrote a sliding log must not reopen its window.
  for i = 1, n do
    if ARGV[4 * i] == 's' then
      local newest = redis.call('ZRANGE', KEYS[1 + i], -1, -1, 'WITHSCORES')[2]
      if newest and tonumber(newest) > now then now = tonumber(newest) end
    end
  end
  return now
end

return batch(function(KEYS, ARGV)
  local cost = tonumber(ARGV[1])
  local n = #KEYS - 1
  local state = redis.call('MGET', unpack(KEYS))
  local blocked = 0
  if state[1] then
    blocked = redis.call('PTTL', KEYS[1])
    if blocked < 0 then blocked = 0 end
  end
  -- The reply, filled in as the policies are checked: out[4i - 2 .. 4i + 1] is policy i's
  -- allowed, remaining, retry and reset. `stored` keeps what a charge needs: a GCRA's new
  -- arrival time, a sliding log's size.
  local out, stored = {blocked}, {}
  -- The time, read only when a policy needs it (the fixed window counts without it).
  local now = nil
  local all_allowed = blocked == 0
  for i = 1, n do
    local key = KEYS[1 + i]
    local algorithm = ARGV[4 * i]
    local limit = tonumber(ARGV[4 * i + 1])
    local period = tonumber(ARGV[4 * i + 2])
    local allowed, remaining, retry, reset
    if algorithm ~= 'f' and not now then now = clock(KEYS, ARGV, n) end
    if algorithm == 'g' then
      -- GCRA: one theoretical arrival time per key; burst cells may arrive at once.
      local burst = tonumber(ARGV[4 * i + 3])
      local interval = period / limit
      local tat = tonumber(state[1 + i] or now)
      if tat < now then tat = now end
      local new_tat = tat + cost * interval
      local allow_at = new_tat - burst * interval
      allowed = now >= allow_at
      if allowed then
        stored[i] = new_tat
        remaining = math.floor((now - allow_at) / interval)
        retry, reset = 0, math.ceil(new_tat - now)
      else
        remaining = math.floor(math.max(0, now - (tat - burst * interval)) / interval)
        retry, reset = math.ceil(allow_at - now), math.ceil(tat - now)
      end
    elseif algorithm == 's' then
      -- Sliding log: one entry per unit of cost; never more than limit in any window of period.
      redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - period))
      local used = redis.call('ZCARD', key)
      stored[i] = used
      allowed = used + cost <= limit
      if allowed then
        remaining, retry = limit - used - cost, 0
      else
        remaining = limit - used
        -- The entry whose expiry frees enough room.
        local oldest = redis.call('ZRANGE', key, used + cost - limit - 1, used + cost - limit - 1, 'WITHSCORES')
        retry = math.max(0, math.ceil(tonumber(oldest[2]) + period - now))
      end
      local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
      reset = 0
      if newest[2] then reset = math.ceil(tonumber(newest[2]) + period - now) end
    else
      -- Fixed window, as the original design counted: it admits up to 2 x limit across an edge.
      local used = tonumber(state[1 + i] or '0')
      reset = period
      if state[1 + i] then
        reset = redis.call('PTTL', key)
        if reset < 0 then reset = period end
      end
      allowed = used + cost <= limit
      remaining = math.max(0, limit - used - (allowed and cost or 0))
      retry = allowed and 0 or reset
    end
    out[4 * i - 2], out[4 * i - 1], out[4 * i], out[4 * i + 1] = allowed and 1 or 0, remaining, retry, reset
    all_allowed = all_allowed and allowed
  end

  if all_allowed and ARGV[2] == '1' then
    for i = 1, n do
      local key, algorithm, period = KEYS[1 + i], ARGV[4 * i], tonumber(ARGV[4 * i + 2])
      if algorithm == 'g' then
        redis.call('SET', key, string.format('%.3f', stored[i]), 'PX', string.format('%d', math.max(1, out[4 * i + 1])))
      elseif algorithm == 's' then
        log_add(key, now, cost, stored[i])
        redis.call('PEXPIRE', key, ARGV[4 * i + 2])
        out[4 * i + 1] = period
      elseif redis.call('INCRBY', key, ARGV[1]) == cost then
        -- A new window: its TTL (and the reply's reset) is the period, as computed above.
        redis.call('PEXPIRE', key, ARGV[4 * i + 2])
      end
    end
  end
  return out
end)
