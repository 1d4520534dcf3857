-- A worker's round trip: acknowledge finished jobs, then take new ones.
-- ARGV[3]: lease token of the jobs taken; ARGV[4]: lease ms; ARGV[5]: how many to take;
-- ARGV[6], ARGV[7]: the queue's rate limit (jobs, window ms; 0 jobs: none);
-- ARGV[8], ARGV[9]: how long and how many dead jobs to keep (for jobs whose lease ran out on
-- their last attempt); ARGV[10]: number of acknowledgements, then 8 values each: kind (c completed, f failed and
-- retried after `delay`, x dead-lettered, r handed back unstarted), id, token, attempt,
-- payload (result or error), delay ms, keep ms, keep count.
-- Returns {statuses (1 applied or already applied, 0 refused: the lease was lost),
-- taken jobs (id, data, attempt, max attempts, options, created ms for each),
-- ms until the next delayed job is due or -1, paused 0/1, ms until the rate window reopens or 0}.
local token, lease, want = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local rate_max, rate_window = tonumber(ARGV[6]), tonumber(ARGV[7])
local stalled_keep, stalled_count = tonumber(ARGV[8]), tonumber(ARGV[9])
local n_acks = tonumber(ARGV[10])

local statuses, finished, done_ids = {}, {}, {}
local completed, failed = 0, 0
for i = 0, n_acks - 1 do
  local b = 11 + i * 8
  local kind, id, tok, attempt = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local payload, delay = ARGV[b + 4], tonumber(ARGV[b + 5])
  local keep, keep_count = tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  local key = job_key(id)
  local job = redis.call('HMGET', key, 's', 'l', 'y', 'g')
  if job[2] ~= tok then
    statuses[#statuses + 1] = 0
  elseif job[1] ~= 'a' then
    -- Applied by an earlier try of this same acknowledgement.
    statuses[#statuses + 1] = 1
  else
    statuses[#statuses + 1] = 1
    finished[#finished + 1] = id
    if kind == 'c' then
      redis.call('HSET', key, 's', 'c', 'f', NOW, 'r', payload)
      retire(K_DONE, id, keep, keep_count, job[4])
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
        enqueue(id, job[3])
        wake()
      end
      emit('retrying', id, tostring(delay))
    elseif kind == 'x' then
      failed = failed + 1
      redis.call('HSET', key, 's', 'x', 'f', NOW, 'e' .. attempt, payload)
      retire(K_DEAD, id, keep, keep_count, job[4])
      emit('failed', id, payload)
      emit('dead', id)
    else
      redis.call('HINCRBY', key, 'a', -1)
      redis.call('HSET', key, 's', 'w')
      enqueue(id, job[3], true)
      wake()
    end
  end
end
if #finished > 0 then redis.call('ZREM', K_ACTIVE, unpack(finished)) end
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
local stalled = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', NOW, 'LIMIT', 0, 100)
for _, id in ipairs(stalled) do
  redis.call('ZREM', K_ACTIVE, id)
  local key = job_key(id)
  local job = redis.call('HMGET', key, 'a', 'n', 'y', 'g')
  if job[1] then
    emit('stalled', id)
    local a, n = tonumber(job[1]) or 0, tonumber(job[2]) or 1
    local reason = 'lease expired: the worker stopped or lost Redis during attempt ' .. a
    if a >= n then
      redis.call('HSET', key, 's', 'x', 'f', NOW, 'e' .. a, reason)
      retire(K_DEAD, id, stalled_keep, stalled_count, job[4])
      emit('dead', id)
    else
      redis.call('HSET', key, 's', 'w', 'e' .. a, reason)
      enqueue(id, job[3], true)
    end
  end
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
local taken, leases = {}, {}
for _, id in ipairs(ids) do
  local key = job_key(id)
  local job = redis.call('HMGET', key, 'd', 'a', 'n', 'o', 't')
  -- A job deleted while waiting leaves only its id behind.
  if job[1] then
    local attempt = (tonumber(job[2]) or 0) + 1
    redis.call('HSET', key, 's', 'a', 'a', attempt, 'l', token, 'st', NOW)
    leases[#leases + 1] = NOW + lease
    leases[#leases + 1] = id
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
  redis.call('ZADD', K_ACTIVE, unpack(leases))
  emit('active', table.concat(taken, ' '))
  if rate_max > 0 then
    if redis.call('INCRBY', K_RATE, #taken) == #taken then redis.call('PEXPIRE', K_RATE, rate_window) end
  end
  -- More work left: wake another worker.
  if redis.call('LLEN', K_WAIT) > 0 or redis.call('ZCARD', K_PRIO) > 0 then wake() end
end

local next_due = tonumber(redis.call('ZRANGE', K_DELAY, 0, 0, 'WITHSCORES')[2])
return { statuses, jobs, next_due and math.max(next_due - NOW, 0) or -1, paused, limited_until }
