-- Records a running job's progress. ARGV[3]: id; ARGV[4]: lease token; ARGV[5]: progress (JSON).
-- Returns 1, or 0 when the lease was lost.
local key = job_key(ARGV[3])
local job = redis.call('HMGET', key, 's', 'l')
if job[1] ~= 'a' or job[2] ~= ARGV[4] then return 0 end
redis.call('HSET', key, 'p', ARGV[5])
emit('progress', ARGV[3], ARGV[5])
return 1
