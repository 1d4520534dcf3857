-- Appends a line to a job's log, keeping the last ARGV[5] lines.
-- ARGV[3]: id; ARGV[4]: line. Returns the number of lines, or -1 when the job does not exist.
local key, logs = job_key(ARGV[3]), log_key(ARGV[3])
local ttl = redis.call('PTTL', key)
if ttl == -2 then return -1 end
local n = redis.call('RPUSH', logs, ARGV[4])
local keep = tonumber(ARGV[5])
if n > keep then
  redis.call('LTRIM', logs, -keep, -1)
  n = keep
end
-- A job without an expiry (still to run) keeps its log a week from the last line; a finished
-- job's log expires with it.
redis.call('PEXPIRE', logs, ttl > 0 and ttl or 604800000)
return n
