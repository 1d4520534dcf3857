-- Ends every session of a user ("log out everywhere").
-- KEYS[1] index of the user's routing tag; ARGV[1] session key prefix (a session key is
-- prefix .. id), ARGV[2] user id. The index is shared by every user whose tag is the same (a
-- 1 in 2^64 chance), so each session's owner is checked before it is ended.
-- All the keys share one hash tag, so this is exact on Redis Cluster too.
-- Returns how many live sessions ended.
local ended = 0
local others = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. member
  local value = redis.pcall('GET', key)
  if not value then
    redis.call('ZREM', KEYS[1], member)
  elseif (read_header(value) or {}).u == ARGV[2] then
    ended = ended + redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], member)
  else
    others = others + 1
  end
end
if others == 0 then redis.call('DEL', KEYS[1]) end
return ended
