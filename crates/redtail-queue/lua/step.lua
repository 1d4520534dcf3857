-- A worker's round trip: acknowledge finished jobs, then take new ones under a new lease.
-- ARGV[3]: lease token of the jobs taken; ARGV[4]: lease ms; ARGV[5]: how many to take;
-- ARGV[6], ARGV[7]: the queue's rate limit (jobs, window ms; 0 jobs: none);
-- ARGV[8], ARGV[9]: how long and how many dead jobs to keep (for jobs whose lease ran out on
-- their last attempt); ARGV[10]: number of acknowledgements, then 9 values each: kind
-- (c completed, f failed and retried after `delay`, x dead-lettered, r handed back unstarted),
-- id, lease token, attempt, payload (result or error), delay ms, keep ms, keep count, flags
-- (1: the job has a log; 2: a resend after an error, which may have been applied already).
-- Returns {statuses (1 applied or already applied, 0 refused: the lease was lost),
-- taken jobs (id, data, attempt, max attempts, options, created ms for each),
-- ms until the next delayed job is due or -1, paused 0/1, ms until the rate window reopens or 0}.
local token, lease, want = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local rate_max, rate_window = tonumber(ARGV[6]), tonumber(ARGV[7])
local stalled_count = tonumber(ARGV[9])
local n_acks = tonumber(ARGV[10])

-- While a lease is held, none of its unacknowledged jobs can have moved: only the recovery of an
-- expired lease (which ends it) or an acknowledgement under it moves them. So a first
-- acknowledgement under a held lease applies without reading the job.
local held = {}
local function is_held(tok)
  local h = held[tok]
  if h == nil then
    h = redis.call('ZSCORE', K_LEASES, tok) ~= false
    held[tok] = h
  end
  return h
end

local statuses, done_ids, acked = {}, {}, {}
local completed, failed = 0, 0
for i = 0, n_acks - 1 do
  local b = 11 + i * 9
  local kind, id, tok, attempt = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local payload, delay = ARGV[b + 4], tonumber(ARGV[b + 5])
  local keep, keep_count, flags = ARGV[b + 6], tonumber(ARGV[b + 7]), tonumber(ARGV[b + 8])
  local has_log, resend = flags % 2 == 1, flags >= 2
  local key = job_key(id)
  local apply = false
  if resend then
    -- Applied before if the job left the active state under this same token.
    local job = redis.call('HMGET', key, 's', 'l')
    if job[2] ~= tok then
      statuses[#statuses + 1] = 0
    elseif job[1] ~= 'a' then
      statuses[#statuses + 1] = 1
    else
      apply = is_held(tok)
      statuses[#statuses + 1] = apply and 1 or 0
    end
  else
    apply = is_held(tok)
    statuses[#statuses + 1] = apply and 1 or 0
  end
  if apply then
    acked[tok] = (acked[tok] or 0) + 1
    if kind == 'c' then
      redis.call('HSET', key, 's', 'c', 'f', NOW_S, 'r', payload)
      retire(K_DONE, id, keep, keep_count, has_log)
      done_ids[#done_ids + 1] = id
      completed = completed + 1
    elseif kind == 'f' then
      failed = failed + 1
      emit('failed', id, payload)
      if delay > 0 then
        redis.call('HSET', key, 's', 'd', 'e' .. attempt, payload)
        redis.call('ZADD', K_DELAY, NOW + delay, id)
      else
        redis.call('HSET', key, 's', 'w', 'e' .. attempt, payload)
        enqueue(id, redis.call('HGET', key, 'y'))
        wake()
      end
      emit('retrying', id, tostring(delay))
    elseif kind == 'x' then
      failed = failed + 1
      redis.call('HSET', key, 's', 'x', 'f', NOW_S, 'e' .. attempt, payload)
      retire(K_DEAD, id, keep, keep_count, has_log)
      emit('failed', id, payload)
      emit('dead', id)
    else
      redis.call('HINCRBY', key, 'a', -1)
      redis.call('HSET', key, 's', 'w')
      enqueue(id, redis.call('HGET', key, 'y'), true)
      wake()
    end
  end
end
for tok, n in pairs(acked) do
  if redis.call('HINCRBY', K_LEFT, tok, -n) <= 0 then end_lease(tok) end
end
flush_retired()
emit('completed', table.concat(done_ids, ' '))
count_minute('c', completed)
count_minute('f', failed)

-- Delayed jobs that are due join the line.
local due = redis.call('ZRANGEBYSCORE', K_DELAY, '-inf', NOW, 'LIMIT', 0, 1000)
if #due > 0 then
  redis.call('ZREM', K_DELAY, unpack(due))
  for _, id in ipairs(due) do
    local key = job_key(id)
    local job = redis.call('HMGET', key, 's', 'y')
    if job[1] then
      redis.call('HSET', key, 's', 'w')
      enqueue(id, job[2])
    end
  end
  emit('waiting', table.concat(due, ' '))
end

-- Jobs whose lease ran out (their worker died or lost Redis) run again, or are dead-lettered
-- when that was their last attempt.
for _, tok in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW, 'LIMIT', 0, 10)) do
  for _, id in ipairs(redis.call('LRANGE', batch_key(tok), 0, -1)) do
    local key = job_key(id)
    local job = redis.call('HMGET', key, 's', 'l', 'a', 'n', 'y')
    if job[1] == 'a' and job[2] == tok then
      emit('stalled', id)
      local a, n = tonumber(job[3]) or 0, tonumber(job[4]) or 1
      local reason = 'lease expired: the worker stopped or lost Redis during attempt ' .. a
      if a >= n then
        redis.call('HSET', key, 's', 'x', 'f', NOW_S, 'e' .. a, reason)
        retire(K_DEAD, id, ARGV[8], stalled_count, true)
        emit('dead', id)
      else
        redis.call('HSET', key, 's', 'w', 'e' .. a, reason)
        enqueue(id, job[5], true)
      end
    end
  end
  end_lease(tok)
end
flush_retired()

local paused = redis.call('EXISTS', K_PAUSED)
local limited_until = 0
if paused == 1 then want = 0 end
if want > 0 and rate_max > 0 then
  local used = tonumber(redis.call('GET', K_RATE) or '0')
  if used >= rate_max then
    limited_until = math.max(redis.call('PTTL', K_RATE), 1)
    want = 0
  else
    want = math.min(want, rate_max - used)
  end
end

local jobs, ids = {}, {}
if want > 0 then
  local popped = redis.call('ZPOPMIN', K_PRIO, want)
  for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
  if #ids < want then
    local plain = redis.call('LPOP', K_WAIT, want - #ids)
    if plain then for _, id in ipairs(plain) do ids[#ids + 1] = id end end
  end
end
local taken = {}
for _, id in ipairs(ids) do
  local key = job_key(id)
  local job = redis.call('HMGET', key, 'd', 'a', 'n', 'o', 't')
  -- A job deleted while waiting leaves only its id behind.
  if job[1] then
    local attempt = (tonumber(job[2]) or 0) + 1
    redis.call('HSET', key, 's', 'a', 'a', string.format('%d', attempt), 'l', token, 'st', NOW_S)
    taken[#taken + 1] = id
    jobs[#jobs + 1] = id
    jobs[#jobs + 1] = job[1]
    jobs[#jobs + 1] = attempt
    jobs[#jobs + 1] = job[3] or '1'
    jobs[#jobs + 1] = job[4] or ''
    jobs[#jobs + 1] = job[5] or '0'
  end
end
if #taken > 0 then
  redis.call('RPUSH', batch_key(token), unpack(taken))
  redis.call('HSET', K_LEFT, token, #taken)
  redis.call('ZADD', K_LEASES, NOW + lease, token)
  emit('active', table.concat(taken, ' '))
  if rate_max > 0 then
    if redis.call('INCRBY', K_RATE, #taken) == #taken then redis.call('PEXPIRE', K_RATE, rate_window) end
  end
  -- More work left: wake another worker.
  if redis.call('LLEN', K_WAIT) > 0 or redis.call('ZCARD', K_PRIO) > 0 then wake() end
end

local next_due = tonumber(redis.call('ZRANGE', K_DELAY, 0, 0, 'WITHSCORES')[2])
return { statuses, jobs, next_due and math.max(next_due - NOW, 0) or -1, paused, limited_until }
