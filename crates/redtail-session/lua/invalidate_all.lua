-- Ends every session of a user ("log out everywhere").
-- KEYS[1] index of the user's routing tag; ARGV[1] session key prefix (a session key is
-- prefix .. id), ARGV[2] user id. The index is shared by every user whose tag is the same (a
-- 1 in 2^64 chance), so each session's owner is checked before it is ended.
-- All the keys share one hash tag, so this is exact on Redis Cluster too.
-- Returns how many live sessions ended.
local ended = 0
local remaining = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. member
  local owner = redis.call('HGET', key, 'u')
  if owner == ARGV[2] then
    ended = ended + redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], member)
  elseif owner then
    remaining = remaining + 1
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
if remaining == 0 then redis.call('DEL', KEYS[1]) end
return ended
