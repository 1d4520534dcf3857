-- Removes up to ARGV[5] jobs finished more than ARGV[4] ms ago from the completed (ARGV[3] = 'c')
-- or dead-letter ('x') set. Returns how many were removed.
local set = ARGV[3] == 'c' and K_DONE or K_DEAD
local ids = redis.call('ZRANGEBYSCORE', set, '-inf', NOW - tonumber(ARGV[4]), 'LIMIT', 0, tonumber(ARGV[5]))
if #ids == 0 then return 0 end
local keys = {}
for _, id in ipairs(ids) do
  keys[#keys + 1] = job_key(id)
  keys[#keys + 1] = log_key(id)
end
redis.call('DEL', unpack(keys))
redis.call('ZREM', set, unpack(ids))
emit('removed', table.concat(ids, ' '))
return #ids
