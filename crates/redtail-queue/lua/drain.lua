-- Removes up to 1000 jobs that have not started: waiting, prioritized and grouped, and delayed
-- when ARG_DELAYED is '1' (src/script/drain.rs); a flow's child among them is removed from its
-- parent's dependencies. Returns how many were removed; call again
-- until 0.
local removed = {}
local function take(ids)
  for _, id in ipairs(ids) do
    removed[#removed + 1] = id
    -- A flow's child: its parent runs without it. (A parent is delayed only until its deadline.)
    local job = redis.call('HMGET', job_key(id), 'm', 's')
    flows().notify(job[1], id, OUTCOME_REMOVED)
    if job[2] == STATE_WAITING_CHILDREN then redis.call('ZREM', K_WC, id) end
    redis.call('DEL', job_key(id), log_key(id))
  end
end
local plain = redis.call('LPOP', K_WAIT, 1000)
if plain then take(plain) end
local counts = redis.call('HGETALL', K_GCOUNT)
for i = 1, #counts, 2 do
  if #removed >= 1000 then break end
  local group = counts[i]
  if group_counts(counts[i + 1]) > 0 then
    local ids = redis.call('LPOP', groups().key(group), 1000 - #removed)
    if ids then
      take(ids)
      groups().remove(group, #ids)
    end
  end
end
if #removed < 1000 then
  local prio = redis.call('ZRANGE', K_PRIO, 0, 999 - #removed)
  if #prio > 0 then take(prio); redis.call('ZREM', K_PRIO, unpack(prio)) end
end
if ARGV[ARG_DELAYED] == '1' and #removed < 1000 then
  local delayed = redis.call('ZRANGE', K_DELAY, 0, 999 - #removed)
  for _, id in ipairs(delayed) do
    -- One holding its group's place gives it back.
    local job = redis.call('HMGET', job_key(id), 'g', 'gh')
    if job[2] == '1' then groups().leave(job[1]) end
  end
  if #delayed > 0 then take(delayed); redis.call('ZREM', K_DELAY, unpack(delayed)) end
end
if rejoined then wake() end
emit('removed', table.concat(removed, ' '))
return #removed
