-- A worker lane's round trip: acknowledge finished jobs, then take new ones under its lease.
-- Its arguments, acknowledgement fields, kinds and reply are named in src/script/step.rs, which
-- generates the ARG_, ACK_, KIND_, REPLY_ and TAKEN_ constants this file uses.
local token, lease, want = ARGV[ARG_TOKEN], tonumber(ARGV[ARG_LEASE_MS]), tonumber(ARGV[ARG_WANT])
local rate_max, rate_window = tonumber(ARGV[ARG_RATE_MAX]), tonumber(ARGV[ARG_RATE_WINDOW_MS])
local stalled_count = ARGV[ARG_STALLED_KEEP_COUNT]
local n_acks = tonumber(ARGV[ARG_ACKS])
-- Groups: jobs each may run at once, its rate limit (0: none), and whether a job waiting out a
-- backoff holds its group's place (counts as running in it, and runs first in it again).
local group_concurrency = tonumber(ARGV[ARG_GROUP_CONCURRENCY])
local group_rate_max, group_rate_window = tonumber(ARGV[ARG_GROUP_RATE_MAX]), ARGV[ARG_GROUP_RATE_WINDOW_MS]
local hold = ARGV[ARG_GROUP_HOLD] == '1'
-- The groups of the grouped jobs acknowledged, by acknowledgement (from 0), listed apart so
-- that ungrouped ones carry nothing: "<ack> <group> <ack> <group>...", or empty.
local ack_groups = listed_apart(ARGV[ARG_ACK_GROUPS])
-- The parents of the acknowledged jobs that are a flow's children, listed the same way.
local ack_parents = listed_apart(ARGV[ARG_ACK_PARENTS])

-- A lease lost once (it expired and its jobs were taken back) is never held again: its
-- lane must start over with a new token. While it is held, none of its running jobs can
-- have moved, so a first acknowledgement applies without reading the job.
-- An expired lease is lost even before its jobs are taken back (below, in this same call).
local deadline = redis.call('ZSCORE', K_LEASES, token)
local held = deadline ~= false and tonumber(deadline) > NOW
if not deadline and ARGV[ARG_NEW_LEASE] == '1' then
  redis.call('ZADD', K_LEASES, NOW + lease, token)
  held = true
end

-- A scheduler's job was acknowledged: ARGV's tick field is "<tick ms> <next tick ms, or 0 when
-- the schedule has ended> <attempts> <priority> <scheduler id> <next job's options>". The next
-- tick's job is made once: only while the scheduler still waits for this tick (see
-- src/scheduler.rs). `data` is the acknowledged job's, which the next job takes.
local function advance(id, tick_field, data)
  local tick, nxt, attempts, priority, sid, options =
    string.match(tick_field, '^(%d+) (%d+) (%d+) (%d+) (%S+) (.*)$')
  local state = sid and redis.call('HGET', K_TICKS, sid)
  if not state or string.match(state, '^(%d+)') ~= tick then return end
  local runs = tonumber(string.match(state, '^%d+ (%d+)')) or 0
  if not data then
    -- The job's hash is gone (deleted as it finished): the template's data, from the definition.
    local definition = redis.call('HGET', K_SCHED, sid)
    data = definition and cjson.encode(cjson.decode(definition).data)
  end
  if nxt == '0' or not data then
    redis.call('HSET', K_TICKS, sid, '0 ' .. runs .. ' ' .. id)
    return
  end
  local job = sid .. ':' .. nxt
  local m = attempts .. ' ' .. NOW_S .. ' ' .. priority .. ' ' .. options
  if redis.call('EXISTS', job_key(job)) == 0 and write_job(job, data, m, tonumber(nxt)) then
    enqueue(job, priority)
    wake()
  end
  emit('added', job)
  redis.call('HSET', K_TICKS, sid, nxt .. ' ' .. (runs + 1) .. ' ' .. job)
end

local statuses, done_ids, finished = {}, {}, {}
local completed, failed = 0, 0
for i = 0, n_acks - 1 do
  local b = ARG_ACKS + 1 + i * ACK_FIELDS
  local kind, id, attempt, started = ARGV[b + ACK_KIND], ARGV[b + ACK_ID], ARGV[b + ACK_ATTEMPT], ARGV[b + ACK_STARTED]
  local payload, delay = ARGV[b + ACK_PAYLOAD], ARGV[b + ACK_DELAY_MS]
  local keep, keep_count = ARGV[b + ACK_KEEP_MS], ARGV[b + ACK_KEEP_COUNT]
  local has_log, resend = ARGV[b + ACK_LOGGED] == '1', ARGV[b + ACK_RESEND] == '1'
  local group = ack_groups[i] or ''
  local key = job_key(id)
  local apply = held
  if held and resend then
    -- Still running this attempt here: not applied yet. Otherwise applied before if the
    -- job's last attempt is this one, from this lane.
    local entry = redis.call('HGET', K_RUN, id)
    local run_token, before = nil, nil
    if entry then run_token, before = running(entry) end
    apply = run_token == token and before + 1 == tonumber(attempt)
    if not apply then
      local job = redis.call('HMGET', key, 'l', 'a')
      if not job[1] then
        local record = record_of(id)
        if record then job = { select(3, record_parts(record)) } end
      end
      statuses[#statuses + 1] = (job[1] == token and tonumber(job[2]) == tonumber(attempt)) and 1 or 0
    end
  elseif not held then
    statuses[#statuses + 1] = 0
  end
  if apply then
    statuses[#statuses + 1] = 1
    finished[#finished + 1] = id
    local tick = ARGV[b + ACK_TICK]
    if tick ~= '' then advance(id, tick, redis.call('HGET', key, 'd')) end
    if kind == KIND_KEPT or kind == KIND_COMPLETED then
      if kind == KIND_KEPT then
        keep_record(key, id, payload, keep, keep_count)
      else
        redis.call('HSET', key, 's', STATE_COMPLETED, 'a', attempt, 'l', token, 'st', started, 'f', NOW_S, 'r', payload)
        retire(K_DONE, key, id, keep, keep_count, has_log)
      end
      done_ids[#done_ids + 1] = id
      completed = completed + 1
      if group ~= '' then groups().leave(group, true) end
      if ack_parents[i] then flows().tell(ack_parents[i], id, OUTCOME_COMPLETED, payload) end
    elseif kind == KIND_FAILED then
      failed = failed + 1
      emit('failed', id, payload)
      if delay ~= '0' then
        redis.call('HSET', key, 's', STATE_DELAYED, 'a', attempt, 'l', token, 'st', started, 'e' .. attempt, payload)
        redis.call('ZADD', K_DELAY, NOW + tonumber(delay), id)
        if group ~= '' then
          if hold then redis.call('HSET', key, 'gh', '1') else groups().leave(group, true) end
        end
      else
        redis.call('HSET', key, 'a', attempt, 'l', token, 'st', started, 'e' .. attempt, payload)
        enqueue(id, (placement(key)), hold, group)
        if group ~= '' then groups().leave(group, true) end
        wake()
      end
      emit('retrying', id, delay)
    elseif kind == KIND_DEAD then
      failed = failed + 1
      redis.call('HSET', key, 's', STATE_DEAD, 'a', attempt, 'l', token, 'st', started, 'f', NOW_S, 'e' .. attempt, payload)
      retire(K_DEAD, key, id, keep, keep_count, has_log)
      if group ~= '' then groups().leave(group, true) end
      emit('failed', id, payload)
      emit('dead', id)
      if ack_parents[i] then flows().tell(ack_parents[i], id, OUTCOME_FAILED, payload) end
    elseif kind == KIND_DELAYED then
      -- Put off by its handler: due again after the delay, the attempt not spent (it runs
      -- again as the same attempt). A resent acknowledgement of it reads as refused: harmless.
      redis.call('HSET', key, 's', STATE_DELAYED, 'a', tonumber(attempt) - 1, 'l', token, 'st', started)
      redis.call('ZADD', K_DELAY, NOW + tonumber(delay), id)
      if group ~= '' then
        if hold then redis.call('HSET', key, 'gh', '1') else groups().leave(group, true) end
      end
      emit('retrying', id, delay)
    elseif kind == KIND_RELEASED then
      -- Handed back unstarted: the attempt does not count.
      enqueue(id, (placement(key)), true, group)
      if group ~= '' then groups().leave(group, true) end
      wake()
    end
  end
end
-- (The groups the acknowledgements freed go back to the ring together.)
if group_helpers then group_helpers.offer_pending() end
if #finished > 0 then redis.call('HDEL', K_RUN, unpack(finished)) end
flush_retired()

-- Reconcile, after a call whose reply the lane never got: jobs that call took are recorded
-- under the lane's token but run nowhere. They go back to the front of the line, their
-- attempt not counted. (A held lease is never recovered, so nothing else would free them.)
local r = ARG_ACKS + 1 + n_acks * ACK_FIELDS
local n_held = tonumber(ARGV[r] or '-1')
if held and n_held >= 0 then
  local runs = {}
  for i = 1, n_held do runs[ARGV[r + i]] = true end
  local entries = redis.call('HGETALL', K_RUN)
  local orphans = {}
  for i = 1, #entries, 2 do
    if not runs[entries[i]] and running(entries[i + 1]) == token then orphans[#orphans + 1] = entries[i] end
  end
  if #orphans > 0 then
    redis.call('HDEL', K_RUN, unpack(orphans))
    for _, id in ipairs(orphans) do
      local priority, group = placement(job_key(id))
      enqueue(id, priority, true, group)
      if group ~= '' then groups().leave(group) end
    end
    wake()
  end
end
emit('completed', table.concat(done_ids, ' '))
count_minute('c', completed)
count_minute('f', failed)

-- Delayed jobs that are due join the line.
local next_due = tonumber(redis.call('ZRANGE', K_DELAY, 0, 0, 'WITHSCORES')[2])
if next_due and next_due <= NOW then
  local due = redis.call('ZRANGEBYSCORE', K_DELAY, '-inf', NOW_S, 'LIMIT', 0, 1000)
  redis.call('ZREM', K_DELAY, unpack(due))
  local failed_parents, joined = false, {}
  for _, id in ipairs(due) do
    local key = job_key(id)
    local job = redis.call('HMGET', key, 's', 'm', 'g', 'gh')
    if job[1] == STATE_WAITING_CHILDREN then
      -- A flow's parent due here was not confirmed fully added by its deadline (src/flow.rs).
      flows().fail(id, key, 'the flow was not fully added: its producer stopped before adding every child')
      failed_parents = true
    elseif job[1] then
      local _, _, priority = meta(job[2])
      due_now(id, key, priority, job[3] or '', job[4] == '1')
      joined[#joined + 1] = id
    end
  end
  if failed_parents then flush_retired() end
  emit('waiting', table.concat(joined, ' '))
  next_due = tonumber(redis.call('ZRANGE', K_DELAY, 0, 0, 'WITHSCORES')[2])
end

-- Jobs whose lane's lease ran out (the worker died or lost Redis) run again, or are
-- dead-lettered when that was their last attempt.
local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW_S, 'LIMIT', 0, 10)
if #expired > 0 then
  local gone = {}
  for _, tok in ipairs(expired) do
    gone[tok] = true
    redis.call('ZREM', K_LEASES, tok)
  end
  local entries = redis.call('HGETALL', K_RUN)
  for i = 1, #entries, 2 do
    local id = entries[i]
    local tok, before = running(entries[i + 1])
    if gone[tok] then
      redis.call('HDEL', K_RUN, id)
      local key = job_key(id)
      local job = redis.call('HMGET', key, 'm', 'g')
      local max, _, priority = meta(job[1])
      local group = job[2] or ''
      local attempt = string.format('%d', before + 1)
      local reason = 'lease expired: the worker stopped or lost Redis during attempt ' .. attempt
      emit('stalled', id)
      if before + 1 >= (tonumber(max) or 1) then
        redis.call('HSET', key, 's', STATE_DEAD, 'a', attempt, 'f', NOW_S, 'e' .. attempt, reason)
        retire(K_DEAD, key, id, ARGV[ARG_STALLED_KEEP_MS], stalled_count, true)
        emit('dead', id)
        if string.find(job[1] or '', '"fp"', 1, true) then flows().notify(job[1], id, OUTCOME_FAILED, reason) end
      else
        redis.call('HSET', key, 'a', attempt, 'e' .. attempt, reason)
        enqueue(id, priority, true, group)
      end
      if group ~= '' then groups().leave(group) end
    end
  end
  flush_retired()
end

local paused = redis.call('EXISTS', K_PAUSED)
local limited_until = 0
if paused == 1 or not held then want = 0 end
if want > 0 and rate_max > 0 then
  local used = tonumber(redis.call('GET', K_RATE) or '0')
  if used >= rate_max then
    limited_until = math.max(redis.call('PTTL', K_RATE), 1)
    want = 0
  else
    want = math.min(want, rate_max - used)
  end
end

local jobs, ids, grouped, taken_groups = {}, {}, {}, {}
-- Whether this call found groups in the queue (so that it looks at the ring first below).
local saw_groups = false

if want > 0 then
  local popped = redis.call('ZPOPMIN', K_PRIO, want)
  for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
  -- (One call is all a queue without groups pays.)
  local with_groups = #ids < want and redis.call('EXISTS', K_GRING, K_GTIMED) > 0
  if with_groups then
    -- Groups past their rate limit's window are offered again.
    local timed = redis.call('ZRANGEBYSCORE', K_GTIMED, '-inf', NOW_S, 'LIMIT', 0, 100)
    if #timed > 0 then
      redis.call('ZREM', K_GTIMED, unpack(timed))
      for _, group in ipairs(timed) do
        if groups().waiting(group) then groups().offer(group) end
      end
      with_groups = redis.call('EXISTS', K_GRING) == 1
    end
    saw_groups = true
  end
  local take_grouped = nil
  if with_groups then
    -- Takes up to `quota` grouped jobs, round-robin: each lap pops groups from the ring's head and
    -- takes one job of each that is under its concurrency and rate limit, then puts those with
    -- more to run back at the tail, so a lap visits a group once. A group at its concurrency
    -- leaves the ring (a finishing job offers it again); one at its rate limit waits in K_GTIMED.
    take_grouped = function(quota)
      local g, got = groups(), 0
      while got < quota do
        local popped = redis.call('ZPOPMIN', K_GRING, quota - got)
        if #popped == 0 then return end
        local back = {}
        for i = 1, #popped, 2 do
          local group = popped[i]
          local rate_key = group_rate_max > 0 and PREFIX .. 'gl:' .. group
          if rate_key and tonumber(redis.call('GET', rate_key) or '0') >= group_rate_max then
            g.time_out(group, rate_key)
          else
            -- Counted first (one fewer waiting, one more running), and taken back when over the
            -- concurrency (the group then stays out of the ring until one of its jobs ends) or
            -- when the group has nothing left.
            local left, active = g.count(group, g.taken)
            local under = left >= 0 and active <= group_concurrency
            local id = under and redis.call('LPOP', g.key(group))
            if not id then
              -- (A list found empty although counted: its waiting count is set right, to 0.)
              g.count(group, under and string.format('%d', -left * GROUP_SPAN - 1) or g.untaken)
            else
              ids[#ids + 1] = id
              grouped[id] = group
              got = got + 1
              local used = 0
              if rate_key then
                used = redis.call('INCR', rate_key)
                if used == 1 then redis.call('PEXPIRE', rate_key, group_rate_window) end
              end
              -- (A group with nothing left waiting leaves the ring; its next job offers it again.)
              if left > 0 then
                if rate_key and used >= group_rate_max then
                  g.time_out(group, rate_key)
                elseif active < group_concurrency then
                  back[#back + 1] = group
                end
              end
            end
          end
        end
        if #back == 0 then return end
        g.push(back)
      end
    end
  end
  -- Grouped and plain jobs share what is left half and half, either taking what the other
  -- leaves, so neither starves the other.
  if with_groups then take_grouped(math.ceil((want - #ids) / 2)) end
  if #ids < want then
    local plain = redis.call('LPOP', K_WAIT, want - #ids)
    if plain then for _, id in ipairs(plain) do ids[#ids + 1] = id end end
  end
  if with_groups and #ids < want then take_grouped(want - #ids) end
end
local taken, entries = {}, {}
local stamp = ' ' .. NOW_S
for _, id in ipairs(ids) do
  local job = redis.call('HMGET', job_key(id), 'd', 'a', 'm', 'g')
  -- A job deleted while waiting leaves only its id behind.
  if not job[1] and grouped[id] then groups().leave(grouped[id]) end
  if job[1] then
    local before = job[2] or '0'
    taken[#taken + 1] = id
    entries[#entries + 1] = id
    entries[#entries + 1] = token .. ' ' .. before .. stamp
    local at = #jobs
    jobs[at + TAKEN_ID] = id
    jobs[at + TAKEN_DATA] = job[1]
    jobs[at + TAKEN_ATTEMPT] = tonumber(before) + 1
    jobs[at + TAKEN_META] = job[3] or ''
    if job[4] then
      taken_groups[#taken_groups + 1] = #taken
      taken_groups[#taken_groups + 1] = job[4]
    end
  end
end
if #taken > 0 then
  redis.call('HSET', K_RUN, unpack(entries))
  emit('active', table.concat(taken, ' '))
  if rate_max > 0 then
    if redis.call('INCRBY', K_RATE, #taken) == #taken then redis.call('PEXPIRE', K_RATE, rate_window) end
  end
  -- More work left: wake another worker.
  if paused == 0 and ((saw_groups and redis.call('EXISTS', K_GRING) == 1) or redis.call('LLEN', K_WAIT) > 0
    or redis.call('ZCARD', K_PRIO) > 0 or (not saw_groups and redis.call('EXISTS', K_GRING) == 1)) then
    wake(true)
  end
elseif rejoined then
  -- A group this call freed can start a job, and this call took none.
  wake()
end
if #taken == 0 and want > 0 then
  -- Nothing to take now: when a group's rate limit ends first, look again then.
  local reopens = tonumber(redis.call('ZRANGE', K_GTIMED, 0, 0, 'WITHSCORES')[2])
  if reopens and (limited_until == 0 or reopens - NOW < limited_until) then
    limited_until = math.max(reopens - NOW, 1)
  end
end

local reply = {}
reply[REPLY_STATUSES] = statuses
reply[REPLY_JOBS] = jobs
reply[REPLY_NEXT_DUE] = next_due and math.max(next_due - NOW, 0) or -1
reply[REPLY_PAUSED] = paused
reply[REPLY_LIMITED] = limited_until
reply[REPLY_NOW] = NOW
reply[REPLY_HELD] = held and 1 or 0
reply[REPLY_GROUPS] = taken_groups
return reply
