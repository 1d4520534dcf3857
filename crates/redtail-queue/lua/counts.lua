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
-- Of grouped jobs, the head of the group whose turn is next (the ring's order, not the
-- creation times of every group's head: an estimate that reads one group).
local first_group = redis.call('ZRANGE', K_GRING, 0, 0)[1]
if first_group then consider(redis.call('LINDEX', groups().key(first_group), 0)) end
-- Grouped jobs (one value per group with jobs waiting or running: a read for operators).
local grouped_waiting, grouped_active, groups_waiting, groups_running = 0, 0, 0, 0
for _, value in ipairs(redis.call('HVALS', K_GCOUNT)) do
  local waiting, running = group_counts(value)
  grouped_waiting, grouped_active = grouped_waiting + waiting, grouped_active + running
  if waiting > 0 then groups_waiting = groups_waiting + 1 end
  if running > 0 then groups_running = groups_running + 1 end
end
local out = {}
out[REPLY_WAITING] = redis.call('LLEN', K_WAIT) + redis.call('ZCARD', K_PRIO) + grouped_waiting
out[REPLY_DELAYED] = redis.call('ZCARD', K_DELAY)
out[REPLY_ACTIVE] = redis.call('HLEN', K_RUN)
out[REPLY_COMPLETED] = redis.call('LLEN', K_DONE)
out[REPLY_DEAD] = redis.call('ZCARD', K_DEAD)
out[REPLY_WAITING_CHILDREN] = redis.call('ZCARD', K_WC)
out[REPLY_PAUSED] = redis.call('EXISTS', K_PAUSED)
out[REPLY_OLDEST] = oldest
out[REPLY_NOW] = NOW
out[REPLY_GROUPS_WAITING] = groups_waiting
out[REPLY_GROUPS_RUNNING] = groups_running
out[REPLY_GROUPS_PAUSED] = redis.call('SCARD', K_GPAUSED)
out[REPLY_GROUPED_WAITING] = grouped_waiting
out[REPLY_GROUPED_ACTIVE] = grouped_active
local minute = math.floor(NOW / 60000)
for i = 0, tonumber(ARGV[ARG_MINUTES]) - 1 do
  local m = redis.call('HMGET', PREFIX .. 'm:' .. (minute - i), 'c', 'f', 'dd')
  local first = #out + 1
  out[first + MINUTE_COMPLETED] = tonumber(m[1]) or 0
  out[first + MINUTE_FAILED] = tonumber(m[2]) or 0
  out[first + MINUTE_DEDUPLICATED] = tonumber(m[3]) or 0
end
return out
