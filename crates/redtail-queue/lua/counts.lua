-- Read only. Counts by state, whether paused, the oldest waiting job's creation ms (-1: none),
-- then completed and failed counts for each of the last ARGV[3] minutes, newest first.
local oldest = -1
local function consider(id)
  if not id then return end
  local _, created = meta(redis.call('HGET', job_key(id), 'm'))
  local t = tonumber(created)
  if t and (oldest < 0 or t < oldest) then oldest = t end
end
consider(redis.call('LINDEX', K_WAIT, 0))
consider(redis.call('ZRANGE', K_PRIO, 0, 0)[1])
local out = {
  redis.call('LLEN', K_WAIT) + redis.call('ZCARD', K_PRIO),
  redis.call('ZCARD', K_DELAY),
  redis.call('HLEN', K_RUN),
  redis.call('LLEN', K_DONE),
  redis.call('ZCARD', K_DEAD),
  redis.call('EXISTS', K_PAUSED),
  oldest,
  NOW,
}
local minute = math.floor(NOW / 60000)
for i = 0, tonumber(ARGV[3]) - 1 do
  local m = redis.call('HMGET', PREFIX .. 'm:' .. (minute - i), 'c', 'f')
  out[#out + 1] = tonumber(m[1]) or 0
  out[#out + 1] = tonumber(m[2]) or 0
end
return out
