-- Lists a user's live sessions, pruning the index as it reads.
-- KEYS[1] index of the user's routing tag; ARGV[1] session key prefix, ARGV[2] user id.
-- Returns {id, fields} for each live session of the user, fields as HGETALL gives them.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. member
  local fields = redis.call('HGETALL', key)
  if #fields == 0 then
    redis.call('ZREM', KEYS[1], member)
  elseif redis.call('HGET', key, 'u') == ARGV[2] then
    out[#out + 1] = {member, fields}
  end
end
return out
