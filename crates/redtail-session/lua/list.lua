-- Lists a user's live sessions, pruning the index as it reads.
-- KEYS[1] index of the user's routing tag; ARGV[1] session key prefix, ARGV[2] user id.
-- Returns {id, value} for each live session of the user.
-- Every session is read before the index is pruned: their keys are known only from the index,
-- and a script that reaches a key it did not declare fails there (on a cluster while the slot
-- migrates), which must happen before it has changed anything.
local now = tonumber(redis.call('TIME')[1])
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')
local values = {}
for i, member in ipairs(members) do values[i] = get_session(ARGV[1] .. member) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for i, member in ipairs(members) do
  local value = values[i]
  if not value then
    redis.call('ZREM', KEYS[1], member)
  elseif (read_header(value) or {}).u == ARGV[2] then
    out[#out + 1] = {member, value}
  end
end
return out
