-- Records a running job's progress (src/script/progress.rs): ARG_ID, the lane's ARG_TOKEN, and
-- ARG_PROGRESS (JSON). Returns 1, or 0 when the job no longer runs under this token.
local id, token, progress = ARGV[ARG_ID], ARGV[ARG_TOKEN], ARGV[ARG_PROGRESS]
local entry = redis.call('HGET', K_RUN, id)
if not entry or running(entry) ~= token or not redis.call('ZSCORE', K_LEASES, token) then return 0 end
redis.call('HSET', job_key(id), 'p', progress)
emit('progress', id, progress)
return 1
