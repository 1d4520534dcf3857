-- Lists a user's live sessions, pruning the index as it reads.
-- KEYS[1] index of the user's routing tag; ARGV[1] session key prefix, ARGV[2] user id.
-- Returns {id, value} for each live session of the user.
local time = redis.call('TIME')
local now = tonumber(time[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local value = redis.pcall('GET', ARGV[1] .. member)
  if not value then
    redis.call('ZREM', KEYS[1], member)
  elseif (read_header(value) or {}).u == ARGV[2] then
    out[#out + 1] = {member, value}
  end
end
return out
