-- Checks several policies for one subject and charges all of them, or none; one call checks
-- the subjects of several callers (redtail_core::BatchedScript), each on its own.
-- Time is the server's (TIME), in milliseconds, so client clocks never matter; unless
-- ARG_CLIENT_NOW holds the client's time (for hosts that forbid TIME), which is then clamped so
-- that stored time never goes backwards.
-- Keys, arguments, reply and algorithm codes are named in src/script.rs (CheckKey, CheckArg,
-- PolicyField, CheckReply, DecisionField, AlgorithmCode). Policy i's arguments are at
-- ARG_CLIENT_NOW + (i - 1) * POLICY_FIELDS + POLICY_*, its verdict in the reply at
-- REPLY_BLOCKED + (i - 1) * DECISION_FIELDS + DECISION_*.
-- Every policy's state is read with the block key in one MGET (a sliding log, a sorted set,
-- reads as nil there and is read on its own): the fewer commands, the more checks a second.
-- Numbers go to redis.call as strings where they can (Lua formats a number argument with
-- printf("%.17g")).

-- The first policy's arguments, for the lean one-policy paths: summed once per call, not per
-- read.
local FIRST_ALGORITHM, FIRST_LIMIT = ARG_CLIENT_NOW + POLICY_ALGORITHM, ARG_CLIENT_NOW + POLICY_LIMIT
local FIRST_PERIOD_MS, FIRST_BURST = ARG_CLIENT_NOW + POLICY_PERIOD_MS, ARG_CLIENT_NOW + POLICY_BURST
local FIRST_ELAPSED_MS = ARG_CLIENT_NOW + POLICY_ELAPSED_MS

-- The server's time, read once for the whole call.
local server_now = nil

-- The time this check runs at; `logs` are the keys of the sliding logs checked.
local function clock(ARGV, logs)
  if ARGV[ARG_CLIENT_NOW] == '' then
    if not server_now then
      local time = redis.call('TIME')
      server_now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    end
    return server_now
  end
  local now = tonumber(ARGV[ARG_CLIENT_NOW])
  -- A client clock behind the one that wrote a sliding log must not reopen its window.
  for _, key in ipairs(logs) do
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]
    if newest and tonumber(newest) > now then now = tonumber(newest) end
  end
  return now
end

-- What is left of the subject's block in ms (its key, KEYS[K_BLOCK], read as `state[K_BLOCK]`); 0
-- when none.
local function subject_block(KEYS, state)
  if not state[K_BLOCK] then return 0 end
  local left = redis.call('PTTL', KEYS[K_BLOCK])
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
  local state = redis.call('MGET', KEYS[K_BLOCK], KEYS[K_POLICIES])
  local blocked = subject_block(KEYS, state)
  local cost = tonumber(ARGV[ARG_COST])
  local allowed, remaining, retry, reset, new_tat =
    gcra(clock(ARGV, {}), state[K_POLICIES], cost, tonumber(ARGV[FIRST_LIMIT]),
      tonumber(ARGV[FIRST_PERIOD_MS]), tonumber(ARGV[FIRST_BURST]))
  if allowed and blocked == 0 and ARGV[ARG_CHARGE] == '1' then
    redis.call('SET', KEYS[K_POLICIES], string.format('%.3f', new_tat), 'PX', string.format('%d', math.max(1, reset)))
  end
  -- The reply in CheckReply then DecisionField order (a constructor: no rehash as it grows).
  return {blocked, allowed and 1 or 0, remaining, retry, reset}
end

-- One fixed window without a block duration: the same reads, writes and reply as the general
-- path, with the TTL set only when the counter is new (the script is atomic, so a counter that
-- exists has one).
local function fixed_alone(KEYS, ARGV)
  local state = redis.call('MGET', KEYS[K_BLOCK], KEYS[K_POLICIES])
  local blocked = subject_block(KEYS, state)
  local cost, limit = tonumber(ARGV[ARG_COST]), tonumber(ARGV[FIRST_LIMIT])
  local used = tonumber(state[K_POLICIES] or '0')
  local reset = tonumber(ARGV[FIRST_PERIOD_MS]) - tonumber(ARGV[FIRST_ELAPSED_MS])
  local allowed = used + cost <= limit
  if allowed and blocked == 0 and ARGV[ARG_CHARGE] == '1' then
    redis.call('INCRBY', KEYS[K_POLICIES], ARGV[ARG_COST])
    if not state[K_POLICIES] then redis.call('PEXPIRE', KEYS[K_POLICIES], ARGV[FIRST_PERIOD_MS]) end
  end
  -- The reply in CheckReply then DecisionField order.
  return {blocked, allowed and 1 or 0, math.max(0, limit - used - (allowed and cost or 0)), allowed and 0 or reset, reset}
end

return batch(function(KEYS, ARGV)
  -- One policy with one key (its state, no block duration): the keys end at K_POLICIES.
  if #KEYS == K_POLICIES then
    if ARGV[FIRST_ALGORITHM] == ALGO_GCRA and ARGV[ARG_CLIENT_NOW] == '' then return gcra_alone(KEYS, ARGV) end
    if ARGV[FIRST_ALGORITHM] == ALGO_FIXED_WINDOW then return fixed_alone(KEYS, ARGV) end
  end
  local cost = tonumber(ARGV[ARG_COST])
  local n = (#ARGV - ARG_CLIENT_NOW) / POLICY_FIELDS
  local state = redis.call('MGET', unpack(KEYS))
  local blocked = subject_block(KEYS, state)
  -- Where each policy's keys are: its state, the previous window (w), its block key.
  local at, prev_at, block_at, logs = {}, {}, {}, {}
  local k = K_POLICIES
  for i = 1, n do
    local p = ARG_CLIENT_NOW + (i - 1) * POLICY_FIELDS
    at[i] = k
    k = k + 1
    if ARGV[p + POLICY_ALGORITHM] == ALGO_SLIDING_WINDOW then
      prev_at[i] = k
      k = k + 1
    elseif ARGV[p + POLICY_ALGORITHM] == ALGO_SLIDING_LOG then
      logs[#logs + 1] = KEYS[at[i]]
    end
    if ARGV[p + POLICY_BLOCK_MS] ~= '0' then
      block_at[i] = k
      k = k + 1
    end
  end
  -- The reply, filled in as the policies are checked (policy i's verdict from d below).
  -- `stored` keeps what a charge needs: a GCRA's new arrival time, a sliding log's size.
  local out, stored, exceeded = {}, {}, {}
  out[REPLY_BLOCKED] = blocked
  -- The time, read only when a policy needs it (the counters count without it).
  local now = nil
  local all_allowed = blocked == 0
  for i = 1, n do
    local p, d = ARG_CLIENT_NOW + (i - 1) * POLICY_FIELDS, REPLY_BLOCKED + (i - 1) * DECISION_FIELDS
    local key = KEYS[at[i]]
    local algorithm = ARGV[p + POLICY_ALGORITHM]
    local limit = tonumber(ARGV[p + POLICY_LIMIT])
    local period = tonumber(ARGV[p + POLICY_PERIOD_MS])
    local allowed, remaining, retry, reset
    if (algorithm == ALGO_GCRA or algorithm == ALGO_SLIDING_LOG) and not now then now = clock(ARGV, logs) end
    if algorithm == ALGO_GCRA then
      allowed, remaining, retry, reset, stored[i] = gcra(now, state[at[i]], cost, limit, period, tonumber(ARGV[p + POLICY_BURST]))
    elseif algorithm == ALGO_SLIDING_LOG then
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
    elseif algorithm == ALGO_SLIDING_WINDOW then
      -- Sliding-window counter: the previous window weighted by the part still covered.
      local elapsed = tonumber(ARGV[p + POLICY_ELAPSED_MS])
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
      reset = period - tonumber(ARGV[p + POLICY_ELAPSED_MS])
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
        retry = math.max(retry, tonumber(ARGV[p + POLICY_BLOCK_MS]))
      end
    end
    out[d + DECISION_ALLOWED], out[d + DECISION_REMAINING], out[d + DECISION_RETRY_MS], out[d + DECISION_RESET_MS] = allowed and 1 or 0, remaining, retry, reset
    all_allowed = all_allowed and allowed
  end

  if ARGV[ARG_CHARGE] ~= '1' then return out end
  if not all_allowed then
    -- Policies with a block duration that refused now start their block; its value is when it
    -- ends (a check without a script reads it for its retry).
    for i in pairs(exceeded) do
      local p = ARG_CLIENT_NOW + (i - 1) * POLICY_FIELDS
      now = now or clock(ARGV, logs)
      local ends = string.format('%d', now + tonumber(ARGV[p + POLICY_BLOCK_MS]))
      redis.call('SET', KEYS[block_at[i]], ends, 'PX', ARGV[p + POLICY_BLOCK_MS], 'NX')
    end
    return out
  end
  for i = 1, n do
    local p, d = ARG_CLIENT_NOW + (i - 1) * POLICY_FIELDS, REPLY_BLOCKED + (i - 1) * DECISION_FIELDS
    local key, algorithm, period = KEYS[at[i]], ARGV[p + POLICY_ALGORITHM], tonumber(ARGV[p + POLICY_PERIOD_MS])
    if algorithm == ALGO_GCRA then
      redis.call('SET', key, string.format('%.3f', stored[i]), 'PX', string.format('%d', math.max(1, out[d + DECISION_RESET_MS])))
    elseif algorithm == ALGO_SLIDING_LOG then
      log_add(key, now, cost, stored[i])
      redis.call('PEXPIRE', key, ARGV[p + POLICY_PERIOD_MS])
      out[d + DECISION_RESET_MS] = period
    elseif algorithm == ALGO_SLIDING_WINDOW then
      -- A window's counter also serves the next window's estimate: it lives two periods.
      redis.call('INCRBY', key, ARGV[ARG_COST])
      redis.call('PEXPIRE', key, string.format('%d', 2 * period), 'NX')
    else
      redis.call('INCRBY', key, ARGV[ARG_COST])
      redis.call('PEXPIRE', key, ARGV[p + POLICY_PERIOD_MS], 'NX')
    end
  end
  return out
end)
