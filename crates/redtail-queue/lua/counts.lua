-- Read only. Counts by state, whether paused, the oldest waiting job's creation ms (-1: none),
-- the server's time, then MINUTE_FIELDS counts (completed, failed, deduplicated) for each of the
-- last ARG_MINUTES minutes, newest first (src/script/counts.rs names the reply's positions).
local oldest = -1
local function consider(id)
  if not id then return end
  local _, created = meta(redis.call('HGET', job_key(id), 'm'))
  local t = tonumber(created)
  if t and (oldest < 0 or t < oldest) then oldest = t end
end
consider(redis.call('LINDEX', K_WAIT, 0))
consider(redis.call('ZRANGE', K_PRIO, 0, 0)[1])
local out = {}
out[REPLY_WAITING] = redis.call('LLEN', K_WAIT) + redis.call('ZCARD', K_PRIO)
out[REPLY_DELAYED] = redis.call('ZCARD', K_DELAY)
out[REPLY_ACTIVE] = redis.call('HLEN', K_RUN)
out[REPLY_COMPLETED] = redis.call('LLEN', K_DONE)
out[REPLY_DEAD] = redis.call('ZCARD', K_DEAD)
out[REPLY_PAUSED] = redis.call('EXISTS', K_PAUSED)
out[REPLY_OLDEST] = oldest
out[REPLY_NOW] = NOW
local minute = math.floor(NOW / 60000)
for i = 0, tonumber(ARGV[ARG_MINUTES]) - 1 do
  local m = redis.call('HMGET', PREFIX .. 'm:' .. (minute - i), 'c', 'f', 'dd')
  local first = #out + 1
  out[first + MINUTE_COMPLETED] = tonumber(m[1]) or 0
  out[first + MINUTE_FAILED] = tonumber(m[2]) or 0
  out[first + MINUTE_DEDUPLICATED] = tonumber(m[3]) or 0
end
return out
