-- Adds jobs (src/script/add.rs names the arguments): ARG_COUNT jobs, JOB_FIELDS values each:
-- custom id ('' for a new number), data, delay ms, priority, max attempts, options ('' for the
-- queue's), deduplication id ('' for none), mode (DEDUP_*) and ttl ms, attempts already made;
-- then the grouped jobs' groups, "<job number from 0> <group> ..." ('' when none); then, for a
-- flow (src/flow.rs), JSON ('' for none): "p" the parents among the jobs by number, each
-- {"d": [[child, policy], ...], "k": fk, "t": ms to its deadline, 0 for none} (see flows() in
-- lib.lua), and "c" ids of parents now fully added, whose deadlines end.
-- Returns id, 1 (added) or 0 (a job with that custom id exists, or the add was deduplicated
-- against job id) per job. Custom ids of digits come only from an import (src/import.rs; adds
-- refuse them): one moves the id counter past it, so that no generated id ever takes it.
local n = tonumber(ARGV[ARG_COUNT])
local job_groups = listed_apart(ARGV[ARG_COUNT + 1 + n * JOB_FIELDS])
local flow = ARGV[ARG_COUNT + 2 + n * JOB_FIELDS] or ''
-- (nil for the adds that are not a flow's, which then look nothing up per job.)
local parents = nil
if flow ~= '' then
  flow = cjson.decode(flow)
  parents = flow.p or {}
  -- A flow's jobs are all new: when one exists, none is added, and its id is the reply.
  for i = 0, n - 1 do
    local id = ARGV[ARG_COUNT + 1 + i * JOB_FIELDS + JOB_ID]
    if redis.call('EXISTS', job_key(id)) == 1 or record_of(id) then return { id, 0 } end
  end
  for _, id in ipairs(flow.c or {}) do
    if redis.call('HGET', job_key(id), 's') == STATE_WAITING_CHILDREN then redis.call('ZREM', K_DELAY, id) end
  end
end
local last = redis.call('INCRBY', K_ID, n)
local out, plain, added = {}, {}, {}
local deduplicated, past = 0, last
local ready = false
for i = 0, n - 1 do
  local b = ARG_COUNT + 1 + i * JOB_FIELDS
  local id = ARGV[b + JOB_ID]
  if id == '' then id = string.format('%d', last - n + i + 1) end
  local key = job_key(id)
  local dedup = ARGV[b + JOB_DEDUP_ID]
  local same = nil
  if dedup ~= '' then
    local other = redis.call('GET', PREFIX .. 'dd:' .. dedup)
    if other then
      local mode = ARGV[b + JOB_DEDUP_MODE]
      local state = redis.call('HGET', job_key(other), 's')
      local running = redis.call('HEXISTS', K_RUN, other) == 1
      if mode == DEDUP_THROTTLE then
        same = other
      elseif mode == DEDUP_SIMPLE and (running or state == STATE_WAITING or state == STATE_DELAYED) then
        same = other
      elseif mode == DEDUP_DEBOUNCE and state == STATE_DELAYED and not running then
        -- The pending job takes the new data and waits its delay again from now.
        redis.call('HSET', job_key(other), 'd', ARGV[b + JOB_DATA])
        redis.call('ZADD', K_DELAY, NOW + tonumber(ARGV[b + JOB_DELAY_MS]), other)
        same = other
      end
    end
  end
  if same then
    deduplicated = deduplicated + 1
    out[#out + 1] = same
    out[#out + 1] = 0
  elseif ARGV[b + JOB_ID] ~= '' and (redis.call('EXISTS', key) == 1 or record_of(id)) then
    out[#out + 1] = id
    out[#out + 1] = 0
  else
    if dedup ~= '' then
      redis.call('SET', PREFIX .. 'dd:' .. dedup, id, 'PX', ARGV[b + JOB_DEDUP_TTL_MS])
    end
    local delay, priority = tonumber(ARGV[b + JOB_DELAY_MS]), tonumber(ARGV[b + JOB_PRIORITY])
    local m = ARGV[b + JOB_ATTEMPTS] .. ' ' .. NOW_S .. ' ' .. ARGV[b + JOB_PRIORITY] .. ' ' .. ARGV[b + JOB_OPTIONS]
    local group = job_groups[i] or ''
    local parent = parents and parents[tostring(i)]
    if parent then
      -- A flow's parent (never delayed) waits for its children.
      write_job(id, ARGV[b + JOB_DATA], m, NOW, group)
      local fields = { 's', STATE_WAITING_CHILDREN, 'n', string.format('%d', #parent.d), 'fk', parent.k }
      for _, dep in ipairs(parent.d) do
        fields[#fields + 1] = 'k:' .. dep[1]
        fields[#fields + 1] = 'p ' .. dep[2]
      end
      redis.call('HSET', key, unpack(fields))
      redis.call('ZADD', K_WC, NOW_S, id)
      if parent.t > 0 then redis.call('ZADD', K_DELAY, NOW + parent.t, id) end
    elseif write_job(id, ARGV[b + JOB_DATA], m, NOW + delay, group) then
      ready = true
      if priority > 0 or group ~= '' then enqueue(id, priority, false, group, true) else plain[#plain + 1] = id end
    end
    if ARGV[b + JOB_ATTEMPTS_MADE] ~= '0' then redis.call('HSET', key, 'a', ARGV[b + JOB_ATTEMPTS_MADE]) end
    -- (Ids of 16 digits and more are never generated, and would not fit the counter exactly.)
    local numeric = ARGV[b + JOB_ID] ~= '' and #id <= 15 and string.match(id, '^%d+$')
    if numeric and tonumber(id) > past then past = tonumber(id) end
    added[#added + 1] = id
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
if #plain > 0 then redis.call('RPUSH', K_WAIT, unpack(plain)) end
-- (The groups of the jobs added go in the ring together.)
if group_helpers then group_helpers.offer_pending() end
emit('added', table.concat(added, ' '))
if ready then wake() end
if past > last then redis.call('SET', K_ID, string.format('%d', past)) end
count_minute('dd', deduplicated)
return out
