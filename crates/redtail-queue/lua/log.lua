-- Appends a line (ARG_LINE) to a job's (ARG_ID) log, keeping the last ARG_KEEP lines
-- (src/script/log.rs). Returns the number of lines, or -1 when the job does not exist.
local key, logs = job_key(ARGV[ARG_ID]), log_key(ARGV[ARG_ID])
local ttl = redis.call('PTTL', key)
if ttl == -2 then return -1 end
local n = redis.call('RPUSH', logs, ARGV[ARG_LINE])
local keep = tonumber(ARGV[ARG_KEEP])
if n > keep then
  redis.call('LTRIM', logs, -keep, -1)
  n = keep
end
-- A job without an expiry (still to run) keeps its log a week from the last line; a finished
-- job's log expires with it.
redis.call('PEXPIRE', logs, ttl > 0 and ttl or 604800000)
return n
