-- Records a running job's progress. ARGV[3]: id; ARGV[4]: lease token; ARGV[5]: progress (JSON).
-- Returns 1, or 0 when the job no longer runs under this token.
local entry = redis.call('HGET', K_RUN, ARGV[3])
if not entry or running(entry) ~= ARGV[4] or not redis.call('ZSCORE', K_LEASES, ARGV[4]) then return 0 end
redis.call('HSET', job_key(ARGV[3]), 'p', ARGV[5])
emit('progress', ARGV[3], ARGV[5])
return 1
