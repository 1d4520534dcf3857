-- Lists a user's live sessions, pruning the index as it reads.
-- KEYS[1] index of the user's routing tag; ARGV[1] session key prefix, ARGV[2] user id.
-- Returns {id, value} for each live session of the user.
-- The owner of a stored session, or nil when the value is not a session (foreign data).
local function owner(value)
  if type(value) ~= 'string' then return nil end
  local newline = string.find(value, '\n', 1, true)
  if not newline then return nil end
  local ok, header = pcall(cjson.decode, string.sub(value, 1, newline - 1))
  if ok and type(header) == 'table' then return header.u end
  return nil
end
local time = redis.call('TIME')
local now = tonumber(time[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local value = redis.pcall('GET', ARGV[1] .. member)
  if not value then
    redis.call('ZREM', KEYS[1], member)
  elseif owner(value) == ARGV[2] then
    out[#out + 1] = {member, value}
  end
end
return out
