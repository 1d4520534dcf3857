-- Writes the entries of a batch of concurrent writes (Cache::set and loads), in one call.
-- KEYS the entries; ARGV[2i - 1] the stored value of KEYS[i], ARGV[2i] its life in ms.
-- On a cluster every key of one call shares a slot; elsewhere they may span slots.
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'PX', ARGV[2 * i])
end
return #KEYS
