-- Writes the entries of a batch of concurrent writes (Cache::set and loads), in one call.
-- KEYS the entries; for each, ENTRY_FIELDS arguments (src/script.rs, WriteArg): its stored value
-- and its life in ms.
-- On a cluster every key of one call shares a slot; elsewhere they may span slots.
for i = 1, #KEYS do
  local b = (i - 1) * ENTRY_FIELDS
  redis.call('SET', KEYS[i], ARGV[b + ENTRY_VALUE], 'PX', ARGV[b + ENTRY_LIFE_MS])
end
return #KEYS
