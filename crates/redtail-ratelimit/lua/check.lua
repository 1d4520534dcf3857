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
-- The server's time, read once for the whole call.
local server_now = nil
return batch(function(KEYS, ARGV)
  local cost = tonumber(ARGV[1])
  local charge = ARGV[2] == '1'
  local n = (#ARGV - 3) / 4
  -- The time, read only when a policy needs it (the fixed window counts without it).
  local now = nil
  local function clock()
    if not now then
      if ARGV[3] ~= '' then
        now = tonumber(ARGV[3])
        -- A client clock behind the one that wrote a sliding log must not reopen its window.
        for i = 1, n do
          if ARGV[3 + (i - 1) * 4 + 1] == 's' then
            local newest = redis.call('ZRANGE', KEYS[1 + i], -1, -1, 'WITHSCORES')[2]
            if newest and tonumber(newest) > now then now = tonumber(newest) end
          end
        end
      else
        if not server_now then
          local time = redis.call('TIME')
          server_now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        end
        now = server_now
      end
    end
    return now
  end

  local blocked = redis.call('PTTL', KEYS[1])
  if blocked < 0 then blocked = 0 end

  local verdicts = {}
  local all_allowed = blocked == 0
  for i = 1, n do
    local key = KEYS[1 + i]
    local algorithm = ARGV[3 + (i - 1) * 4 + 1]
    local limit = tonumber(ARGV[3 + (i - 1) * 4 + 2])
    local period = tonumber(ARGV[3 + (i - 1) * 4 + 3])
    local burst = tonumber(ARGV[3 + (i - 1) * 4 + 4])
    local v = {key = key, algorithm = algorithm, period = period}
    if algorithm ~= 'f' then clock() end
    if algorithm == 'g' then
      -- GCRA: one theoretical arrival time per key; burst cells may arrive at once.
      local interval = period / limit
      local tat = tonumber(redis.call('GET', key) or now)
      if tat < now then tat = now end
      local new_tat = tat + cost * interval
      local allow_at = new_tat - burst * interval
      v.allowed = now >= allow_at
      if v.allowed then
        v.state = new_tat
        v.remaining = math.floor((now - allow_at) / interval)
        v.retry = 0
        v.reset = math.ceil(new_tat - now)
      else
        v.remaining = math.floor(math.max(0, now - (tat - burst * interval)) / interval)
        v.retry = math.ceil(allow_at - now)
        v.reset = math.ceil(tat - now)
      end
    elseif algorithm == 's' then
      -- Sliding log: one entry per unit of cost; never more than limit in any window of period.
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
      local used = redis.call('ZCARD', key)
      v.allowed = used + cost <= limit
      v.used = used
      if v.allowed then
        v.remaining = limit - used - cost
        v.retry = 0
      else
        v.remaining = limit - used
        -- The entry whose expiry frees enough room.
        local oldest = redis.call('ZRANGE', key, used + cost - limit - 1, used + cost - limit - 1, 'WITHSCORES')
        v.retry = math.max(0, math.ceil(tonumber(oldest[2]) + period - now))
      end
      local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
      v.reset = 0
      if newest[2] then v.reset = math.ceil(tonumber(newest[2]) + period - now) end
    else
      -- Fixed window, as the original design counted: it admits up to 2 x limit across an edge.
      local used = tonumber(redis.call('GET', key) or '0')
      local ttl = redis.call('PTTL', key)
      if ttl < 0 then ttl = period end
      v.allowed = used + cost <= limit
      v.remaining = math.max(0, limit - used - (v.allowed and cost or 0))
      v.retry = v.allowed and 0 or ttl
      v.reset = ttl
    end
    all_allowed = all_allowed and v.allowed
    verdicts[i] = v
  end

  if all_allowed and charge then
    for i = 1, n do
      local v = verdicts[i]
      if v.algorithm == 'g' then
        redis.call('SET', v.key, string.format('%.3f', v.state), 'PX', math.max(1, v.reset))
      elseif v.algorithm == 's' then
        for c = 1, cost do
          redis.call('ZADD', v.key, now, now .. ':' .. (v.used + c))
        end
        redis.call('PEXPIRE', v.key, v.period)
        v.reset = v.period
      else
        -- A new window: its TTL (and the reply's reset) is the period, as computed above.
        if redis.call('INCRBY', v.key, cost) == cost then
          redis.call('PEXPIRE', v.key, v.period)
        end
      end
    end
  end

  local out = {blocked}
  for i = 1, n do
    local v = verdicts[i]
    out[#out + 1] = v.allowed and 1 or 0
    out[#out + 1] = v.remaining
    out[#out + 1] = v.retry
    out[#out + 1] = v.reset
  end
  return out
end)
