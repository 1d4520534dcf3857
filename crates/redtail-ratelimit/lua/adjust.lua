-- Charges (penalize) or gives back (refund) units of one policy without checking the limit.
-- Its key, arguments and algorithm codes are named in src/script.rs (AdjustKey, AdjustArg,
-- AlgorithmCode). The amount is at most the policy's capacity (checked by the caller): positive
-- charges, negative refunds (on a sliding log, of the newest entries). Never leaves a key
-- without a TTL.
local now
if ARGV[ARG_CLIENT_NOW] ~= '' then
  now = tonumber(ARGV[ARG_CLIENT_NOW])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local algorithm, limit, period, amount = ARGV[ARG_ALGORITHM], tonumber(ARGV[ARG_LIMIT]), tonumber(ARGV[ARG_PERIOD_MS]), tonumber(ARGV[ARG_AMOUNT])
if algorithm == ALGO_GCRA then
  local tat = tonumber(redis.call('GET', KEYS[K_STATE]) or now)
  if tat < now then tat = now end
  tat = tat + amount * period / limit
  if tat <= now then
    redis.call('DEL', KEYS[K_STATE])
  else
    redis.call('SET', KEYS[K_STATE], string.format('%.3f', tat), 'PX', math.ceil(tat - now))
  end
elseif algorithm == ALGO_SLIDING_LOG then
  redis.call('ZREMRANGEBYSCORE', KEYS[K_STATE], '-inf', string.format('%d', now - period))
  if amount > 0 then
    log_add(KEYS[K_STATE], now, amount, redis.call('ZCARD', KEYS[K_STATE]))
    redis.call('PEXPIRE', KEYS[K_STATE], ARGV[ARG_PERIOD_MS])
  elseif amount < 0 then
    redis.call('ZPOPMAX', KEYS[K_STATE], -amount)
  end
elseif algorithm == ALGO_SLIDING_WINDOW then
  -- The current window's counter, which also weighs in the next window: it lives two periods.
  local used = tonumber(redis.call('GET', KEYS[K_STATE]) or '0')
  if used + amount <= 0 then
    redis.call('DEL', KEYS[K_STATE])
  else
    redis.call('INCRBY', KEYS[K_STATE], amount)
    redis.call('PEXPIRE', KEYS[K_STATE], string.format('%d', 2 * period), 'NX')
  end
else
  local used = tonumber(redis.call('GET', KEYS[K_STATE]) or '0')
  local next_used = math.max(0, used + amount)
  local ttl = redis.call('PTTL', KEYS[K_STATE])
  if ttl < 0 then ttl = period end
  if next_used == 0 then
    redis.call('DEL', KEYS[K_STATE])
  else
    redis.call('SET', KEYS[K_STATE], next_used, 'PX', ttl)
  end
end
return 1
