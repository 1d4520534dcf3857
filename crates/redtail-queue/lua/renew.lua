-- Renews a worker's leases. ARGV[3]: lease ms; then lease tokens.
-- Returns the tokens whose lease was lost (it expired and its jobs were taken back).
local lease = tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV do
  if redis.call('ZSCORE', K_LEASES, ARGV[i]) then
    redis.call('ZADD', K_LEASES, NOW + lease, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
