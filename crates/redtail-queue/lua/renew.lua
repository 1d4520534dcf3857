-- Renews a worker's leases (src/script/renew.rs): ARG_LEASE_MS, then lease tokens from
-- ARG_TOKENS. Returns the tokens whose lease was lost (it expired and its jobs were taken back).
local lease = tonumber(ARGV[ARG_LEASE_MS])
local lost = {}
for i = ARG_TOKENS, #ARGV do
  if redis.call('ZSCORE', K_LEASES, ARGV[i]) then
    redis.call('ZADD', K_LEASES, NOW + lease, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
