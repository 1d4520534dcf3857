-- Adds jobs. ARGV[3]: how many; then 6 values a job: custom id ('' for a new number), data,
-- delay ms, priority, max attempts, options ('' for the queue's).
-- Returns id, 1 (added) or 0 (a job with that custom id exists) per job.
local n = tonumber(ARGV[3])
local last = redis.call('INCRBY', K_ID, n)
local out, plain, added = {}, {}, {}
local ready = false
for i = 0, n - 1 do
  local b = 4 + i * 6
  local id = ARGV[b]
  if id == '' then id = string.format('%d', last - n + i + 1) end
  local key = job_key(id)
  if ARGV[b] ~= '' and (redis.call('EXISTS', key) == 1 or record_of(id)) then
    out[#out + 1] = id
    out[#out + 1] = 0
  else
    local delay, priority = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    local fields = { 'd', ARGV[b + 1], 'm', ARGV[b + 4] .. ' ' .. NOW_S .. ' ' .. ARGV[b + 3] .. ' ' .. ARGV[b + 5] }
    fields[#fields + 1] = 's'
    if delay > 0 then
      fields[#fields + 1] = 'd'
      redis.call('ZADD', K_DELAY, NOW + delay, id)
    else
      fields[#fields + 1] = 'w'
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
