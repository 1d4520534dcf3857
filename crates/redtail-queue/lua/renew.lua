-- Renews the leases a worker holds. ARGV[3]: lease ms; then id, token pairs.
-- Returns the ids whose lease was lost (taken over by another worker, or finished).
local lease = tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local job = redis.call('HMGET', job_key(id), 's', 'l')
  if job[1] == 'a' and job[2] == tok then
    redis.call('ZADD', K_ACTIVE, 'XX', NOW + lease, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
