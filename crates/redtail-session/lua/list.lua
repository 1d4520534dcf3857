-- Lists a user's live sessions, pruning the index as it reads.
-- Keys and arguments: src/script.rs (UserKey, UserArg); a session key is ARG_PREFIX .. id.
-- Returns {id, value} for each live session of the user.
-- Every session is read before the index is pruned: their keys are known only from the index,
-- and a script that reaches a key it did not declare fails there (on a cluster while the slot
-- migrates), which must happen before it has changed anything.
local now = tonumber(redis.call('TIME')[1])
local members = redis.call('ZRANGEBYSCORE', KEYS[K_INDEX], '(' .. string.format('%d', now), '+inf')
local values = {}
for i, member in ipairs(members) do values[i] = get_session(ARGV[ARG_PREFIX] .. member) end
redis.call('ZREMRANGEBYSCORE', KEYS[K_INDEX], '-inf', now)
local out = {}
for i, member in ipairs(members) do
  local value = values[i]
  if not value then
    redis.call('ZREM', KEYS[K_INDEX], member)
  elseif (read_header(value) or {}).u == ARGV[ARG_USER] then
    out[#out + 1] = {member, value}
  end
end
return out
