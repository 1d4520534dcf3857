-- Replaces a running job's data (src/script/update.rs): ARG_ID, the lane's ARG_TOKEN, and
-- ARG_DATA (JSON). Returns 1, or 0 when the job no longer runs under this token.
local id, token = ARGV[ARG_ID], ARGV[ARG_TOKEN]
local entry = redis.call('HGET', K_RUN, id)
if not entry or running(entry) ~= token or not redis.call('ZSCORE', K_LEASES, token) then return 0 end
redis.call('HSET', job_key(id), 'd', ARGV[ARG_DATA])
return 1
