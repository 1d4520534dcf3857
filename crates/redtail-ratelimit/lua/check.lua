-- Checks several policies for one subject and charges all of them, or none; one call checks
-- the subjects of several callers (redtail_core::BatchedScript), each on its own.
-- Time is the server's (TIME), in milliseconds, so client clocks never matter; unless ARGV[3]
-- holds the client's time (for hosts that forbid TIME), which is then clamped so that stored
-- time never goes backwards.
-- KEYS[1] the subject's block key; then each policy's keys in order (all keys share a hash tag):
-- its state (a counter: the current window's; a sliding-window counter then the previous one's),
-- then its block key when it has a block duration.
-- ARGV[1] cost; ARGV[2] is 1 to charge (0: only look, for shadow checks and peeks); ARGV[3] the
-- client's time in ms or ''; then six values per policy: algorithm (g: GCRA, s: sliding log,
-- f: fixed window, w: sliding-window counter), limit, period ms, burst, block ms (0: none), and
-- for f and w how far into the current window the caller's clock is, in ms (their windows are
-- named by that clock).
-- Returns {blocked ms, then for each policy: allowed (1/0), remaining, retry after ms, reset after ms}.
-- Every policy's state is read with the block key in one MGET (a sliding log, a sorted set,
-- reads as nil there and is read on its own): the fewer commands, the more checks a second.
-- Numbers go to redis.call as strings where they can (Lua formats a number argument with
-- printf("%.17g")).

-- The server's time, read once for the whole call.
local server_now = nil

-- The time this check runs at; `logs` are the keys of the sliding logs checked.
local function clock(ARGV, logs)
  if ARGV[3] == '' then
    if not server_now then
      local time = redis.call('TIME')
      server_now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    end
    return server_now
  end
  local now = tonumber(ARGV[3])
  -- A client clock behind the one that wrote a sliding log must not reopen its window.
  for _, key in ipairs(logs) do
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]
    if newest and tonumber(newest) > now then now = tonumber(newest) end
  end
  return now
end

-- What is left of the subject's block in ms (its key, KEYS[1], read as `state[1]`); 0 when none.
local function subject_block(KEYS, state)
  if not state[1] then return 0 end
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then return 0 end
  return left
end

-- GCRA: one theoretical arrival time (`stored`, nil when none) per key; `burst` cells may
-- arrive at once. Returns allowed, remaining, retry, reset, and the arrival time to store.
local function gcra(now, stored, cost, limit, period, burst)
  local interval = period / limit
  local tat = tonumber(stored or now)
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - burst * interval
  -- Times are whole milliseconds around 1.8e12, where a double's step is about 0.0002 ms: the
  -- sums above land a hair off the millisecond they stand for (a little more after a long
  -- burst), and the burst's last request in the same millisecond as its first would be
  -- refused. 0.05 ms of slack absorbs that; `now` being whole milliseconds, it admits early
  -- only an arrival time within 0.05 ms after a millisecond, and then by less than one.
  if now + 0.05 >= allow_at then
    return true, math.floor((now - allow_at) / interval), 0, math.ceil(new_tat - now), new_tat
  end
  local remaining = math.floor(math.max(0, now - (tat - burst * interval)) / interval)
  return false, remaining, math.ceil(allow_at - now), math.ceil(tat - now), nil
end

-- The commonest check, one GCRA policy without a block duration on the server's clock, without
-- the general path's bookkeeping: the same reads, writes and reply.
local function gcra_alone(KEYS, ARGV)
  local state = redis.call('MGET', KEYS[1], KEYS[2])
  local blocked = subject_block(KEYS, state)
  local cost = tonumber(ARGV[1])
  local allowed, remaining, retry, reset, new_tat =
    gcra(clock(ARGV, {}), state[2], cost, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
  if allowed and blocked == 0 and ARGV[2] == '1' then
    redis.call('SET', KEYS[2], string.format('%.3f', new_tat), 'PX', string.format('%d', math.max(1, reset)))
  end
  return {blocked, allowed and 1 or 0, remaining, retry, reset}
end

-- One fixed window without a block duration: the same reads, writes and reply as the general
-- path, with the TTL set only when the counter is new (the script is atomic, so a counter that
-- exists has one).
local function fixed_alone(KEYS, ARGV)
  local state = redis.call('MGET', KEYS[1], KEYS[2])
  local blocked = subject_block(KEYS, state)
  local cost, limit = tonumber(ARGV[1]), tonumber(ARGV[5])
  local used = tonumber(state[2] or '0')
  local reset = tonumber(ARGV[6]) - tonumber(ARGV[9])
  local allowed = used + cost <= limit
  if allowed and blocked == 0 and ARGV[2] == '1' then
    redis.call('INCRBY', KEYS[2], ARGV[1])
    if not state[2] then redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
  end
  return {blocked, allowed and 1 or 0, math.max(0, limit - used - (allowed and cost or 0)), allowed and 0 or reset, reset}
end

return batch(function(KEYS, ARGV)
  if #KEYS == 2 then
    if ARGV[4] == 'g' and ARGV[3] == '' then return gcra_alone(KEYS, ARGV) end
    if ARGV[4] == 'f' then return fixed_alone(KEYS, ARGV) end
  end
  local cost = tonumber(ARGV[1])
  local n = (#ARGV - 3) / 6
  local state = redis.call('MGET', unpack(KEYS))
  local blocked = subject_block(KEYS, state)
  -- Where each policy's keys are: its state, the previous window (w), its block key.
  local at, prev_at, block_at, logs = {}, {}, {}, {}
  local k = 2
  for i = 1, n do
    at[i] = k
    k = k + 1
    if ARGV[6 * i - 2] == 'w' then
      prev_at[i] = k
      k = k + 1
    elseif ARGV[6 * i - 2] == 's' then
      logs[#logs + 1] = KEYS[at[i]]
    end
    if ARGV[6 * i + 2] ~= '0' then
      block_at[i] = k
      k = k + 1
    end
  end
  -- The reply, filled in as the policies are checked: out[4i - 2 .. 4i + 1] is policy i's
  -- allowed, remaining, retry and reset. `stored` keeps what a charge needs: a GCRA's new
  -- arrival time, a sliding log's size.
  local out, stored, exceeded = {blocked}, {}, {}
  -- The time, read only when a policy needs it (the counters count without it).
  local now = nil
  local all_allowed = blocked == 0
  for i = 1, n do
    local key = KEYS[at[i]]
    local algorithm = ARGV[6 * i - 2]
    local limit = tonumber(ARGV[6 * i - 1])
    local period = tonumber(ARGV[6 * i])
    local allowed, remaining, retry, reset
    if (algorithm == 'g' or algorithm == 's') and not now then now = clock(ARGV, logs) end
    if algorithm == 'g' then
      allowed, remaining, retry, reset, stored[i] = gcra(now, state[at[i]], cost, limit, period, tonumber(ARGV[6 * i + 1]))
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
    elseif algorithm == 'w' then
      -- Sliding-window counter: the previous window weighted by the part still covered.
      local elapsed = tonumber(ARGV[6 * i + 3])
      local used = tonumber(state[at[i]] or '0')
      local prev = tonumber(state[prev_at[i]] or '0')
      local weighted = math.ceil(prev * (period - elapsed) / period)
      allowed = weighted + used + cost <= limit
      remaining = math.max(0, limit - weighted - used - (allowed and cost or 0))
      retry = 0
      if not allowed then
        if used + cost <= limit then
          -- Later in this window, once the previous one weighs little enough.
          retry = math.ceil(period - (limit - used - cost) * period / prev) - elapsed
        else
          -- In the next window, once this one (then the previous) weighs little enough.
          retry = period - elapsed + math.max(0, math.ceil(period - (limit - cost) * period / used))
        end
        retry = math.max(1, retry)
      end
      reset = 0
      if used > 0 or allowed then reset = 2 * period - elapsed elseif prev > 0 then reset = period - elapsed end
    else
      -- Fixed window, a counter per window as the original design counted: it admits up to
      -- 2 x limit across an edge. Its key names the window; it ends where the caller's clock says.
      local used = tonumber(state[at[i]] or '0')
      reset = period - tonumber(ARGV[6 * i + 3])
      allowed = used + cost <= limit
      remaining = math.max(0, limit - used - (allowed and cost or 0))
      retry = allowed and 0 or reset
    end
    -- A block the policy set when it last refused.
    if block_at[i] then
      if state[block_at[i]] then
        local left = redis.call('PTTL', KEYS[block_at[i]])
        if left > 0 then allowed, retry = false, math.max(retry, left) end
      elseif not allowed then
        exceeded[i] = true
        retry = math.max(retry, tonumber(ARGV[6 * i + 2]))
      end
    end
    out[4 * i - 2], out[4 * i - 1], out[4 * i], out[4 * i + 1] = allowed and 1 or 0, remaining, retry, reset
    all_allowed = all_allowed and allowed
  end

  if ARGV[2] ~= '1' then return out end
  if not all_allowed then
    -- Policies with a block duration that refused now start their block; its value is when it
    -- ends (a check without a script reads it for its retry).
    for i in pairs(exceeded) do
      now = now or clock(ARGV, logs)
      local ends = string.format('%d', now + tonumber(ARGV[6 * i + 2]))
      redis.call('SET', KEYS[block_at[i]], ends, 'PX', ARGV[6 * i + 2], 'NX')
    end
    return out
  end
  for i = 1, n do
    local key, algorithm, period = KEYS[at[i]], ARGV[6 * i - 2], tonumber(ARGV[6 * i])
    if algorithm == 'g' then
      redis.call('SET', key, string.format('%.3f', stored[i]), 'PX', string.format('%d', math.max(1, out[4 * i + 1])))
    elseif algorithm == 's' then
      log_add(key, now, cost, stored[i])
      redis.call('PEXPIRE', key, ARGV[6 * i])
      out[4 * i + 1] = period
    elseif algorithm == 'w' then
      -- A window's counter also serves the next window's estimate: it lives two periods.
      redis.call('INCRBY', key, ARGV[1])
      redis.call('PEXPIRE', key, string.format('%d', 2 * period), 'NX')
    else
      redis.call('INCRBY', key, ARGV[1])
      redis.call('PEXPIRE', key, ARGV[6 * i], 'NX')
    end
  end
  return out
end)
