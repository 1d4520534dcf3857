-- One job by id (src/script/job.rs). ARG_OP: OP_RETRY (a dead job runs again with as many
-- attempts again as it had; attempt numbers go on, so every attempt's error stays), OP_DELETE
-- (a job in any state but active) or OP_PRIORITY (a job that has not finished gets priority
-- ARG_PRIORITY: a waiting one moves to its new place, the others keep it for when they wait)
-- or OP_PROMOTE (a delayed job, or one waiting out a retry's backoff, joins the line now);
-- ARG_ID: the job's id.
-- Returns 1 done, 0 no such job (or not dead, for retry; finished, for priority; not delayed,
-- for promote), -1 refused: the job is running, -2 refused: a grouped job takes no priority.
local op, id = ARGV[ARG_OP], ARGV[ARG_ID]
local key = job_key(id)
local job = redis.call('HMGET', key, 's', 'm', 'a', 'g', 'gh')
local group, holding = job[4] or '', job[5] == '1'
if not job[1] then
  -- Completed and kept as a record (see keep_record)?
  if op ~= OP_DELETE or not record_of(id) then return 0 end
  delete_completed({ id })
  redis.call('LREM', K_DONE, 1, id)
  emit('removed', id)
  return 1
end
if op == OP_PRIORITY then
  if job[1] == STATE_COMPLETED or job[1] == STATE_DEAD then return 0 end
  if group ~= '' then return -2 end
  local max, created, _, options = meta(job[2])
  local p = ARGV[ARG_PRIORITY]
  redis.call('HSET', key, 'm', (max or '1') .. ' ' .. (created or '0') .. ' ' .. p .. ' ' .. (options or ''))
  if job[1] == STATE_WAITING and redis.call('HEXISTS', K_RUN, id) == 0 then
    if redis.call('LREM', K_WAIT, 1, id) + redis.call('ZREM', K_PRIO, id) > 0 then enqueue(id, p) end
  end
  return 1
end
if op == OP_PROMOTE then
  if job[1] ~= STATE_DELAYED or redis.call('ZREM', K_DELAY, id) == 0 then return 0 end
  local _, _, priority = meta(job[2])
  due_now(id, key, priority, group, holding)
  wake()
  emit('waiting', id)
  return 1
end
if op == OP_RETRY then
  if job[1] ~= STATE_DEAD then return 0 end
  redis.call('ZREM', K_DEAD, id)
  local max, created, priority, options = meta(job[2])
  local started, allowed = tonumber(job[3]) or 0, tonumber(max) or 1
  local m = string.format('%d', started + allowed) .. ' ' .. (created or '0') .. ' ' .. (priority or '0') .. ' ' .. (options or '')
  redis.call('HSET', key, 's', STATE_WAITING, 'm', m)
  redis.call('PERSIST', key)
  -- Its log, if any, lives a week from now, as an unfinished job's log does (see log.lua).
  redis.call('PEXPIRE', log_key(id), 604800000)
  enqueue(id, priority, false, group)
  wake()
  emit('waiting', id)
  return 1
end
if redis.call('HEXISTS', K_RUN, id) == 1 then return -1 end
-- A flow's child deleted before it finished: its parent runs without it.
if job[1] ~= STATE_COMPLETED and job[1] ~= STATE_DEAD then flows().notify(job[2], id, OUTCOME_REMOVED) end
if job[1] == STATE_WAITING_CHILDREN then
  redis.call('ZREM', K_WC, id)
  redis.call('ZREM', K_DELAY, id)
elseif job[1] == STATE_WAITING and group ~= '' then
  if redis.call('LREM', groups().key(group), 1, id) > 0 then groups().remove(group, 1) end
elseif job[1] == STATE_WAITING then
  redis.call('LREM', K_WAIT, 1, id)
  redis.call('ZREM', K_PRIO, id)
elseif job[1] == STATE_COMPLETED then
  redis.call('LREM', K_DONE, 1, id)
else
  redis.call('ZREM', job[1] == STATE_DELAYED and K_DELAY or K_DEAD, id)
  if holding then groups().leave(group) end
  if rejoined then wake() end
end
redis.call('DEL', key, log_key(id))
emit('removed', id)
return 1
