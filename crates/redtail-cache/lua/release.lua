-- Releases a load lock only if the caller still holds it.
-- Keys and arguments: src/script.rs (ReleaseKey, ReleaseArg). Returns 1 if released, 0 if not held.
if redis.call('GET', KEYS[K_LOCK]) == ARGV[ARG_TOKEN] then
  return redis.call('DEL', KEYS[K_LOCK])
end
return 0
