-- Ends every session of a user ("log out everywhere").
-- Keys and arguments: src/script.rs (UserKey, UserArg); a session key is ARG_PREFIX .. id.
-- The index is shared by every user whose tag is the same (a
-- 1 in 2^64 chance), so each session's owner is checked before it is ended.
-- All the keys share one hash tag, so this is exact on Redis Cluster too.
-- Returns how many live sessions ended.
-- Every session is read before anything is written: their keys are known only from the index,
-- and a script that reaches a key it did not declare fails there (on a cluster while the slot
-- migrates), which must happen before it has changed anything.
local members = redis.call('ZRANGE', KEYS[K_INDEX], 0, -1)
local values = {}
for i, member in ipairs(members) do values[i] = get_session(ARGV[ARG_PREFIX] .. member) end
local ended = 0
local others = 0
for i, member in ipairs(members) do
  local value = values[i]
  if not value then
    redis.call('ZREM', KEYS[K_INDEX], member)
  elseif (read_header(value) or {}).u == ARGV[ARG_USER] then
    ended = ended + redis.call('DEL', ARGV[ARG_PREFIX] .. member)
    redis.call('ZREM', KEYS[K_INDEX], member)
  else
    others = others + 1
  end
end
if others == 0 then redis.call('DEL', KEYS[K_INDEX]) end
return ended
