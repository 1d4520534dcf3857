-- Prepended to every queue script (scripts cannot share code on the server), after a prelude
-- generated from src/script/: the keys (K_ID ... K_RECS: see QueueKey there and docs/keys.md),
-- the common arguments (ARG_PREFIX: the queue's key prefix, from which job, log and minute keys
-- are built, all under the queue's hash tag; ARG_EVENTS_CAP: how many events the stream keeps,
-- 0 for none), the job states (STATE_*), and the script's own names.
-- A running job is in the running hash only: its own hash is written when it finishes, so
-- taking a job costs one read.
-- Job hash fields: d data, m "<max attempts> <created ms> <priority> <options>" (options JSON,
-- or nothing for the queue's; one field, so that taking a job reads three), a attempts finished
-- or given up (absent: none), s state (STATE_*; a running job's says waiting), l token of the
-- last attempt's lane, st its start ms, f finished ms, p progress, r result, e<attempt> error of
-- that attempt, g its group (absent: none), gh '1' while it waits out a backoff holding its
-- group's place (see hold in step.lua).
local PREFIX = ARGV[ARG_PREFIX]
local EVENTS_CAP = tonumber(ARGV[ARG_EVENTS_CAP])
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- Lua numbers passed to redis.call are formatted with printf("%.17g"), which showed up in
-- profiles; values written per job are passed as strings instead.
local NOW_S = string.format('%d', NOW)
-- Priorities 1..2^20 sort before plain jobs' absence; within one, by sequence.
local PRIORITY_SPAN = 1048576
local SEQ_SPAN = 4294967296

local function job_key(id) return PREFIX .. 'j:' .. id end
local function log_key(id) return PREFIX .. 'lg:' .. id end

-- A job's max attempts, created ms, priority and options, from its m field.
local function meta(m)
  return string.match(m or '', '^(%d+) (%d+) (%d+) (.*)$')
end


-- The token, attempts before and start of a running job, from its entry in the running hash.
local function running(entry)
  local token, before, started = string.match(entry, '^(%S+) (%d+) (%d+)$')
  return token, tonumber(before), started
end

local function emit(kind, ids, data)
  if EVENTS_CAP <= 0 or ids == '' then return end
  if data then
    redis.call('XADD', K_EV, 'MAXLEN', '~', EVENTS_CAP, '*', 'e', kind, 'j', ids, 'd', data)
  else
    redis.call('XADD', K_EV, 'MAXLEN', '~', EVENTS_CAP, '*', 'e', kind, 'j', ids)
  end
end

-- Wakes one sleeping worker, unless the queue is paused or a wake-up is already pending.
-- `unpaused`: the caller knows the queue is not paused.
local function wake(unpaused)
  if (unpaused or redis.call('EXISTS', K_PAUSED) == 0) and redis.call('LLEN', K_MARK) == 0 then
    redis.call('RPUSH', K_MARK, 1)
  end
end

-- Groups (see docs/keys.md): a grouped job waits in its group's list `g:<group>`, first in
-- first out. K_GCOUNT holds, per group, its jobs waiting and running (with those holding its
-- place through a backoff) as one number, waiting * GROUP_SPAN + running, so that one HINCRBY
-- both counts a change and answers with both counts; a group with neither has no field. The
-- ring K_GRING holds the groups that may start a job, each once, scored by a sequence so that a
-- group put back goes behind every other; K_GPAUSED holds paused groups and K_GTIMED those
-- waiting out their rate limit, by when. Whether a group is under its concurrency is checked
-- when the ring gives it (step.lua), so a group may be in the ring and full: it then leaves the
-- ring until one of its jobs finishes.
-- The helpers below are made by the first call to groups() in a script, not by every script:
-- a closure costs each call that makes it (Lua walks the open upvalues for each it captures),
-- and a queue without groups should pay nothing for them.
-- Set when a group came back to the ring: the script then wakes a worker before it ends (the
-- step only when it took no job itself, since then it wakes one anyway while work is left).
local rejoined = false

-- A group's jobs waiting and running, from its K_GCOUNT value (a number, a string or nil).
local function group_counts(value)
  local n = tonumber(value) or 0
  return math.floor(n / GROUP_SPAN), n % GROUP_SPAN
end

-- The values (groups, a flow's parents) an argument lists apart from its items' fields
-- (src/script/mod.rs, listed_apart): item number (from 0) -> value.
local function listed_apart(listed)
  local out = {}
  if listed ~= '' then
    for i, value in string.gmatch(listed, '(%d+) (%S+)') do out[tonumber(i)] = value end
  end
  return out
end

local group_helpers = nil
local function groups()
  if group_helpers then return group_helpers end
  local g = {}
  -- The ring's last turn, and whether any group is paused or rate-limited: each read once per
  -- call, when first needed (time_out says when this call rate-limits one).
  local ring_tail, any_paused, any_timed = nil, nil, nil

  function g.key(group) return PREFIX .. 'g:' .. group end

  -- Changes to a group's counts (GROUP_SPAN: see GroupCounts in src/script/mod.rs), as strings
  -- (see NOW_S): a job more waiting; a job taken (from waiting to running); one taken back.
  g.added = string.format('%d', GROUP_SPAN)
  g.taken, g.untaken = string.format('%d', 1 - GROUP_SPAN), string.format('%d', GROUP_SPAN - 1)

  -- Adds `by` (a string) to `group`'s counts; returns its jobs waiting and running after, and
  -- removes its field when both are 0.
  function g.count(group, by)
    local value = redis.call('HINCRBY', K_GCOUNT, group, by)
    if value == 0 then redis.call('HDEL', K_GCOUNT, group) end
    return group_counts(value)
  end

  -- Whether `group` has jobs waiting.
  function g.waiting(group)
    return (group_counts(redis.call('HGET', K_GCOUNT, group))) > 0
  end

  -- Puts `listed` (groups) at the ring's tail in order, a command per 1,000: with `nx`, only
  -- those not in the ring already. Returns how many it put there.
  function g.push(listed, nx)
    if #listed == 0 then return 0 end
    if not ring_tail then ring_tail = tonumber(redis.call('ZRANGE', K_GRING, -1, -1, 'WITHSCORES')[2]) or 0 end
    local added, turns = 0, {}
    for i, group in ipairs(listed) do
      ring_tail = ring_tail + 1
      turns[#turns + 1] = string.format('%d', ring_tail)
      turns[#turns + 1] = group
      if #turns == 2000 or i == #listed then
        if nx then
          added = added + redis.call('ZADD', K_GRING, 'NX', unpack(turns))
        else
          added = added + redis.call('ZADD', K_GRING, unpack(turns))
        end
        turns = {}
      end
    end
    return added
  end

  -- Puts each of `offered` (groups) in the ring unless it is there, paused or waiting out its
  -- rate limit. Returns how many it put there.
  local function offer_all(offered)
    if any_paused == nil then
      -- (Neither, mostly: one command says so.)
      local either = redis.call('EXISTS', K_GPAUSED, K_GTIMED) > 0
      any_paused = either and redis.call('EXISTS', K_GPAUSED) == 1
      any_timed = any_timed or (either and redis.call('EXISTS', K_GTIMED) == 1)
    end
    if not (any_paused or any_timed) then return g.push(offered, true) end
    local open = {}
    for _, group in ipairs(offered) do
      if not ((any_paused and redis.call('SISMEMBER', K_GPAUSED, group) == 1)
        or (any_timed and redis.call('ZSCORE', K_GTIMED, group))) then
        open[#open + 1] = group
      end
    end
    return g.push(open, true)
  end

  -- Offers held for g.offer_pending(), which makes them in one command: those of an add's
  -- jobs, or of the groups a step's acknowledgements freed.
  local pending, pending_set = {}, {}

  -- Puts `group` in the ring unless it is there, paused or waiting out its rate limit: at
  -- once, or when `later` by g.offer_pending(). Returns true when it was put there now.
  function g.offer(group, later)
    if not later then return offer_all({ group }) > 0 end
    if not pending_set[group] then
      pending_set[group] = true
      pending[#pending + 1] = group
    end
    return false
  end

  function g.offer_pending()
    if #pending > 0 and offer_all(pending) > 0 then rejoined = true end
    pending, pending_set = {}, {}
  end

  -- `group` reached its rate limit (counted at `rate_key`): out of the ring until its window ends.
  function g.time_out(group, rate_key)
    redis.call('ZADD', K_GTIMED, NOW + math.max(redis.call('PTTL', rate_key), 1), group)
    any_timed = true
  end

  -- One job of `group` no longer runs or holds its place: the group may start another (offered
  -- as g.offer does).
  function g.leave(group, later)
    if g.count(group, '-1') > 0 and g.offer(group, later) then rejoined = true end
  end

  -- `n` jobs left `group`'s list without running (deleted or drained): when none is left
  -- waiting, the group leaves the ring.
  function g.remove(group, n)
    if g.count(group, string.format('%d', -n * GROUP_SPAN)) <= 0 then redis.call('ZREM', K_GRING, group) end
  end

  group_helpers = g
  return g
end

-- Puts a job back in line: its group's list when it has a group (priorities do not apply
-- there; the group offered at once, or when `later` by g.offer_pending()), else the
-- prioritized set when it has a priority, else the waiting list (at the front when `front`,
-- for jobs handed back unfinished).
local function enqueue(id, priority, front, group, later)
  if group and group ~= '' then
    local g = groups()
    redis.call(front and 'LPUSH' or 'RPUSH', g.key(group), id)
    g.count(group, g.added)
    g.offer(group, later)
    return
  end
  local p = tonumber(priority) or 0
  if p > 0 then
    local seq = redis.call('INCR', K_ID) % SEQ_SPAN
    redis.call('ZADD', K_PRIO, (PRIORITY_SPAN - p) * SEQ_SPAN + seq, id)
  elseif front then
    redis.call('LPUSH', K_WAIT, id)
  else
    redis.call('RPUSH', K_WAIT, id)
  end
end

-- Where a job goes back in line: its priority and its group ('' for none).
local function placement(key)
  local job = redis.call('HMGET', key, 'm', 'g')
  local _, _, priority = meta(job[1])
  return priority, job[2] or ''
end

-- A delayed job (`holding`: one holding its group's place through a backoff) joins the line
-- now; a holding one goes first in its group, where it was.
local function due_now(id, key, priority, group, holding)
  if holding then
    redis.call('HSET', key, 's', STATE_WAITING)
    redis.call('HDEL', key, 'gh')
  else
    redis.call('HSET', key, 's', STATE_WAITING)
  end
  enqueue(id, priority, holding, group)
  if holding then groups().leave(group) end
end

-- Writes a new job's hash, its `m` field `m`, its group `group` ('' for none), due at `due`
-- ms: in the delayed set when that is later than now. Returns true when it is ready now (the
-- caller puts it in line).
local function write_job(id, data, m, due, group)
  local later = due > NOW
  if group and group ~= '' then
    redis.call('HSET', job_key(id), 'd', data, 'm', m, 's', later and STATE_DELAYED or STATE_WAITING, 'g', group)
  else
    redis.call('HSET', job_key(id), 'd', data, 'm', m, 's', later and STATE_DELAYED or STATE_WAITING)
  end
  if later then redis.call('ZADD', K_DELAY, due, id) end
  return not later
end

-- Completed and dead jobs are kept `age_s` ms (0: deleted at once), at most `count` of them.
-- Completed ids go to a list (they finish in time order, and a list append costs nothing);
-- dead ids to a sorted set by time (they are looked up one by one to retry or delete).
-- A job retired by retire() keeps its hash, given an expiry here; one completed by
-- keep_record() (a first attempt's success, without log or progress) leaves its hash for a
-- record in K_RECS, written with the others of its script:
-- "<finished ms> <expires ms> <record from the worker>", the worker's part being
-- "<token> <attempt> <started ms> <created ms> <max attempts> <priority> <data bytes> <data><result>".
-- The list or set and the records are updated once per script by flush_retired().
-- `age_s` and `count_s` arrive as strings (ARGV); the group of the previous call is reused
-- when they and `set` are the same (interned strings compare in constant time), so a step that
-- retires many jobs of one queue formats no group key per job.
local retired, last, vacated = {}, nil, {}
local function group_of(set, age_s, count_s)
  local group = last
  if not (group and group.set == set and group.age_s == age_s and group.count_s == count_s) then
    local group_key = set .. ' ' .. age_s .. ' ' .. count_s
    group = retired[group_key]
    if not group then
      group = { set = set, age_s = age_s, count_s = count_s, age = tonumber(age_s), count = tonumber(count_s), ids = {},
        records = {} }
      retired[group_key] = group
    end
    last = group
  end
  return group
end

local function retire(set, key, id, age_s, count_s, has_log)
  local group = group_of(set, age_s, count_s)
  if group.age <= 0 or group.count <= 0 then
    redis.call('DEL', key, log_key(id))
    return
  end
  redis.call('PEXPIRE', key, age_s)
  if has_log then redis.call('PEXPIRE', log_key(id), age_s) end
  group.ids[#group.ids + 1] = id
end

local function keep_record(key, id, record, age_s, count_s)
  local group = group_of(K_DONE, age_s, count_s)
  vacated[#vacated + 1] = key
  if group.age <= 0 or group.count <= 0 then return end
  if not group.head then group.head = NOW_S .. ' ' .. string.format('%d', NOW + group.age) .. ' ' end
  group.ids[#group.ids + 1] = id
  local records = group.records
  records[#records + 1] = id
  records[#records + 1] = group.head .. record
end

-- A record's finished ms, expiry ms, lane token and attempt (see keep_record).
local function record_parts(record)
  return string.match(record, '^(%d+) (%d+) (%S+) (%d+) ')
end

-- A completed job's record, unless there is none or it has expired (it is then removed).
local function record_of(id)
  local record = redis.call('HGET', K_RECS, id)
  if not record then return nil end
  local _, expires = record_parts(record)
  if tonumber(expires) and tonumber(expires) > NOW then return record end
  redis.call('HDEL', K_RECS, id)
  return nil
end

local function delete_jobs(ids)
  if #ids == 0 then return end
  local keys = {}
  for _, id in ipairs(ids) do
    keys[#keys + 1] = job_key(id)
    keys[#keys + 1] = log_key(id)
  end
  redis.call('DEL', unpack(keys))
end

-- Completed jobs: kept as records, which have no hash or log, or as hashes.
local function delete_completed(ids)
  if #ids == 0 then return end
  if redis.call('HDEL', K_RECS, unpack(ids)) < #ids then delete_jobs(ids) end
end

local function flush_retired()
  if #vacated > 0 then redis.call('DEL', unpack(vacated)) end
  for _, group in pairs(retired) do
    local set, count, ids = group.set, group.count, group.ids
    if #group.records > 0 then
      redis.call('HSET', K_RECS, unpack(group.records))
      -- The records' hash lives as long as its newest record, and up to a minute more, so that
      -- its expiry is renewed once a minute under load rather than by every script.
      if redis.call('PTTL', K_RECS) < group.age then redis.call('PEXPIRE', K_RECS, group.age + 60000) end
    end
    -- At most 1000 at a time, so lowering a count never makes one call slow.
    -- (A group of jobs deleted at once has no ids.)
    if #ids > 0 and set == K_DONE then
      local excess = math.min(redis.call('RPUSH', set, unpack(ids)) - count, 1000)
      if excess > 0 then
        delete_completed(redis.call('LPOP', set, excess))
      else
        -- Ids whose job has expired (its age passed) leave from the head, oldest first.
        for _ = 1, 100 do
          local head = redis.call('LINDEX', set, 0)
          if not head or record_of(head) or redis.call('EXISTS', job_key(head)) == 1 then break end
          redis.call('LPOP', set)
        end
      end
    elseif #ids > 0 then
      local members = {}
      for _, id in ipairs(ids) do
        members[#members + 1] = NOW_S
        members[#members + 1] = id
      end
      redis.call('ZADD', set, unpack(members))
      redis.call('ZREMRANGEBYSCORE', set, '-inf', NOW - group.age)
      local excess = math.min(redis.call('ZCARD', set) - count, 1000)
      if excess > 0 then
        delete_jobs(redis.call('ZRANGE', set, 0, excess - 1))
        redis.call('ZREMRANGEBYRANK', set, 0, excess - 1)
      end
    end
  end
  retired, last, vacated = {}, nil, {}
end

local MINUTE_KEY = PREFIX .. 'm:' .. string.format('%d', math.floor(NOW / 60000))
local function count_minute(field, n)
  if n <= 0 then return end
  local key = MINUTE_KEY
  -- A new field (always so in a new hash) gives the hash its expiry.
  if redis.call('HINCRBY', key, field, n) == n then redis.call('PEXPIRE', key, 3660000) end
end

-- Flows (see src/flow.rs and docs/keys.md). A child's options name its parent, "<queue>:<id>"
-- (field fp). A parent waits in K_WC in state STATE_WAITING_CHILDREN, its hash holding, per
-- child, a field "k:<queue>:<id>": "p <policy>" while pending, then "c <result>" (completed),
-- "f <error>" (failed, failing the parent) or "i <error>" (failed, ignored); a dependency
-- removed leaves. Its field n counts the pending, and fk is "<keep ms> <keep count> <events
-- cap>" of its queue, for the script of another queue that fails it (settle.lua). A child's
-- outcome goes to its parent as a notice in the outbox of the child's queue (its slot), written
-- by the script that finishes the child, and relayed by that queue's workers to settle.lua in
-- the parent's slot, which applies it once. Made lazily, as groups() is.
local flow_helpers = nil
local function flows()
  if flow_helpers then return flow_helpers end
  local f = {}

  -- The parent named by a job's options (the end of its m field), or nil.
  function f.parent(options)
    if not options or not string.find(options, '"fp"', 1, true) then return nil end
    local ok, decoded = pcall(cjson.decode, options)
    if ok and type(decoded) == 'table' and type(decoded.fp) == 'string' then return decoded.fp end
    return nil
  end

  -- Tells `parent` what became of its child `id` of this queue: an OUTCOME_* code and `payload`,
  -- the result or the error.
  function f.tell(parent, id, outcome, payload)
    redis.call('RPUSH', K_OUTBOX, parent .. ' ' .. id .. ' ' .. outcome .. '\n' .. (payload or ''))
  end

  -- f.tell, for a job whose m field is `m` (nothing when it has no parent).
  function f.notify(m, id, outcome, payload)
    local _, _, _, options = meta(m)
    local parent = f.parent(options)
    if parent then f.tell(parent, id, outcome, payload) end
  end

  -- Parent `id` (hash `key`), waiting for its children, fails for good with `reason`: dead, kept
  -- as its fk field says, and its own parent is told. The caller flushes the retired jobs.
  function f.fail(id, key, reason)
    local job = redis.call('HMGET', key, 'm', 'fk')
    local keep_ms, keep_count = string.match(job[2] or '', '^(%d+) (%d+)')
    redis.call('ZREM', K_WC, id)
    redis.call('ZREM', K_DELAY, id)
    redis.call('HSET', key, 's', STATE_DEAD, 'f', NOW_S, 'e1', reason)
    retire(K_DEAD, key, id, keep_ms or '0', keep_count or '0', true)
    emit('failed', id, reason)
    emit('dead', id)
    f.notify(job[1], id, OUTCOME_FAILED, reason)
  end

  flow_helpers = f
  return f
end

