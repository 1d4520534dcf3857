-- Upserts (ARG_OP is OP_UPSERT) or removes (OP_REMOVE) the job scheduler ARG_ID
-- (src/script/schedule.rs; src/scheduler.rs says how ticks advance). K_SCHED holds its
-- definition, K_TICKS its progress: "<next tick ms, 0 once ended> <runs> <last job id or ->".
-- An upsert makes the first tick's job, due at ARG_FIRST, with id "<scheduler>:<tick ms>".
-- Returns 1 when something changed, 0 when not (no such scheduler; the same definition).
local op, id = ARGV[ARG_OP], ARGV[ARG_ID]
local state = redis.call('HGET', K_TICKS, id)

-- The replaced schedule's pending job goes, unless it has started (its acknowledgement then
-- finds the scheduler moved on, and makes nothing).
local function drop_pending()
  local pending = state and string.match(state, '^%d+ %d+ (%S+)$')
  if not pending or pending == '-' or redis.call('HEXISTS', K_RUN, pending) == 1 then return end
  local s = redis.call('HGET', job_key(pending), 's')
  if s == STATE_DELAYED then
    redis.call('ZREM', K_DELAY, pending)
  elseif s == STATE_WAITING then
    redis.call('LREM', K_WAIT, 1, pending)
    redis.call('ZREM', K_PRIO, pending)
  else
    return
  end
  redis.call('DEL', job_key(pending))
  emit('removed', pending)
end

if op == OP_REMOVE then
  drop_pending()
  return (redis.call('HDEL', K_SCHED, id) + redis.call('HDEL', K_TICKS, id) > 0) and 1 or 0
end
if state and redis.call('HGET', K_SCHED, id) == ARGV[ARG_DEFINITION] then return 0 end
drop_pending()
redis.call('HSET', K_SCHED, id, ARGV[ARG_DEFINITION])
local first = ARGV[ARG_FIRST]
if first == '0' then
  redis.call('HSET', K_TICKS, id, '0 0 -')
  return 1
end
local job = id .. ':' .. first
local m = ARGV[ARG_ATTEMPTS] .. ' ' .. NOW_S .. ' ' .. ARGV[ARG_PRIORITY] .. ' ' .. ARGV[ARG_OPTIONS]
if redis.call('EXISTS', job_key(job)) == 0 and write_job(job, ARGV[ARG_DATA], m, tonumber(first)) then
  enqueue(job, ARGV[ARG_PRIORITY])
  wake()
end
emit('added', job)
redis.call('HSET', K_TICKS, id, first .. ' 1 ' .. job)
return 1
