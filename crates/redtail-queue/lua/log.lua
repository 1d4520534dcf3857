-- Appends a line to a job's log, keeping the last ARGV[5] lines and the job's own expiry.
-- ARGV[3]: id; ARGV[4]: line. Returns the number of lines, or -1 when the job does not exist.
local key, logs = job_key(ARGV[3]), log_key(ARGV[3])
local ttl = redis.call('PTTL', key)
if ttl == -2 then return -1 end
local n = redis.call('RPUSH', logs, ARGV[4])
if n == 1 then redis.call('HSET', key, 'g', 1) end
local keep = tonumber(ARGV[5])
if n > keep then
  redis.call('LTRIM', logs, -keep, -1)
  n = keep
end
if ttl > 0 then redis.call('PEXPIRE', logs, ttl) end
return n
