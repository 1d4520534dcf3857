-- Charges (penalize) or gives back (refund) units of one policy without checking the limit.
-- KEYS[1] the policy's state (a sliding-window counter: the current window's counter).
-- ARGV[1] algorithm (g, s, f or w), ARGV[2] limit, ARGV[3] period ms,
-- ARGV[4] amount, at most the policy's capacity (checked by the caller): positive charges,
-- negative refunds (on a sliding log, of the newest entries); ARGV[5] the client's time in ms, or '' for
-- the server's. Never leaves a key without a TTL.
local now
if ARGV[5] ~= '' then
  now = tonumber(ARGV[5])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local algorithm, limit, period, amount = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if algorithm == 'g' then
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat < now then tat = now end
  tat = tat + amount * period / limit
  if tat <= now then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now))
  end
elseif algorithm == 's' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - period))
  if amount > 0 then
    log_add(KEYS[1], now, amount, redis.call('ZCARD', KEYS[1]))
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  elseif amount < 0 then
    redis.call('ZPOPMAX', KEYS[1], -amount)
  end
elseif algorithm == 'w' then
  -- The current window's counter, which also weighs in the next window: it lives two periods.
  local used = tonumber(redis.call('GET', KEYS[1]) or '0')
  if used + amount <= 0 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('INCRBY', KEYS[1], amount)
    redis.call('PEXPIRE', KEYS[1], string.format('%d', 2 * period), 'NX')
  end
else
  local used = tonumber(redis.call('GET', KEYS[1]) or '0')
  local next_used = math.max(0, used + amount)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = period end
  if next_used == 0 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], next_used, 'PX', ttl)
  end
end
return 1
