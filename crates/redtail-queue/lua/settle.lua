-- Applies a flow child's outcome to its parent (src/script/settle.rs), called by the worker that
-- relays the child queue's outbox (src/flow.rs). ARG_PARENT: the parent's id in this queue;
-- ARG_CHILD: the child, "<queue>:<id>"; ARG_OUTCOME: OUTCOME_*; ARG_PAYLOAD: its result or error.
-- Applied once: only while the parent's entry for the child says pending, so a notice relayed
-- twice changes nothing the second time. Returns a SETTLED_* code.
local id, child, outcome, payload = ARGV[ARG_PARENT], ARGV[ARG_CHILD], ARGV[ARG_OUTCOME], ARGV[ARG_PAYLOAD]
local key = job_key(id)
local field = 'k:' .. child
local entry = redis.call('HGET', key, field)
if not entry or string.sub(entry, 1, 2) ~= 'p ' then return SETTLED_IGNORED end
local policy = string.sub(entry, 3)
local job = redis.call('HMGET', key, 's', 'fk')
-- Events go to the parent queue's stream, capped as that queue caps it.
EVENTS_CAP = tonumber(string.match(job[2] or '', '^%d+ %d+ (%d+)$')) or EVENTS_CAP
local waiting = job[1] == STATE_WAITING_CHILDREN
if outcome == OUTCOME_COMPLETED then
  redis.call('HSET', key, field, 'c ' .. payload)
elseif outcome == OUTCOME_FAILED and policy == POLICY_FAIL then
  redis.call('HSET', key, field, 'f ' .. payload)
  redis.call('HINCRBY', key, 'n', '-1')
  if not waiting then return SETTLED_APPLIED end
  flows().fail(id, key, 'child ' .. child .. ' failed: ' .. payload)
  flush_retired()
  return SETTLED_FAILED
elseif outcome == OUTCOME_FAILED and policy == POLICY_IGNORE then
  redis.call('HSET', key, field, 'i ' .. payload)
else
  -- Failed with the policy remove, or deleted before it finished: the parent runs without it.
  redis.call('HDEL', key, field)
end
if redis.call('HINCRBY', key, 'n', '-1') > 0 or not waiting then return SETTLED_APPLIED end
redis.call('ZREM', K_WC, id)
redis.call('ZREM', K_DELAY, id)
redis.call('HSET', key, 's', STATE_WAITING)
local priority, group = placement(key)
enqueue(id, priority, false, group)
wake()
emit('waiting', id)
return SETTLED_RELEASED
