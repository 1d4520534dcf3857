-- Ends every session of a user ("log out everywhere").
-- KEYS[1] index of the user's routing tag; ARGV[1] session key prefix (a session key is
-- prefix .. id), ARGV[2] user id. The index is shared by every user whose tag is the same (a
-- 1 in 2^64 chance), so each session's owner is checked before it is ended.
-- All the keys share one hash tag, so this is exact on Redis Cluster too.
-- Returns how many live sessions ended.
-- Every session is read before anything is written: their keys are known only from the index,
-- and a script that reaches a key it did not declare fails there (on a cluster while the slot
-- migrates), which must happen before it has changed anything.
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local values = {}
for i, member in ipairs(members) do values[i] = get_session(ARGV[1] .. member) end
local ended = 0
local others = 0
for i, member in ipairs(members) do
  local value = values[i]
  if not value then
    redis.call('ZREM', KEYS[1], member)
  elseif (read_header(value) or {}).u == ARGV[2] then
    ended = ended + redis.call('DEL', ARGV[1] .. member)
    redis.call('ZREM', KEYS[1], member)
  else
    others = others + 1
  end
end
if others == 0 then redis.call('DEL', KEYS[1]) end
return ended
