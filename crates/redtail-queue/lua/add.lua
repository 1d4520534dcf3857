-- Adds jobs (src/script/add.rs names the arguments): ARG_COUNT jobs, JOB_FIELDS values each:
-- custom id ('' for a new number), data, delay ms, priority, max attempts, options ('' for the
-- queue's). Returns id, 1 (added) or 0 (a job with that custom id exists) per job.
local n = tonumber(ARGV[ARG_COUNT])
local last = redis.call('INCRBY', K_ID, n)
local out, plain, added = {}, {}, {}
local ready = false
for i = 0, n - 1 do
  local b = ARG_COUNT + 1 + i * JOB_FIELDS
  local id = ARGV[b + JOB_ID]
  if id == '' then id = string.format('%d', last - n + i + 1) end
  local key = job_key(id)
  if ARGV[b + JOB_ID] ~= '' and (redis.call('EXISTS', key) == 1 or record_of(id)) then
    out[#out + 1] = id
    out[#out + 1] = 0
  else
    local delay, priority = tonumber(ARGV[b + JOB_DELAY_MS]), tonumber(ARGV[b + JOB_PRIORITY])
    local m = ARGV[b + JOB_ATTEMPTS] .. ' ' .. NOW_S .. ' ' .. ARGV[b + JOB_PRIORITY] .. ' ' .. ARGV[b + JOB_OPTIONS]
    local fields = { 'd', ARGV[b + JOB_DATA], 'm', m }
    fields[#fields + 1] = 's'
    if delay > 0 then
      fields[#fields + 1] = STATE_DELAYED
      redis.call('ZADD', K_DELAY, NOW + delay, id)
    else
      fields[#fields + 1] = STATE_WAITING
      ready = true
      if priority > 0 then enqueue(id, priority) else plain[#plain + 1] = id end
    end
    redis.call('HSET', key, unpack(fields))
    added[#added + 1] = id
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
if #plain > 0 then redis.call('RPUSH', K_WAIT, unpack(plain)) end
emit('added', table.concat(added, ' '))
if ready then wake() end
return out
