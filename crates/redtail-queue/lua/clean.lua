-- Removes up to ARG_LIMIT jobs finished more than ARG_OLDER_THAN_MS ago from the completed
-- (ARG_SET is SET_COMPLETED) or dead-letter (SET_DEAD) set (src/script/clean.rs).
-- Returns how many were removed.
local cutoff, limit = NOW - tonumber(ARGV[ARG_OLDER_THAN_MS]), tonumber(ARGV[ARG_LIMIT])
local completed = ARGV[ARG_SET] == SET_COMPLETED
local ids
if completed then
  -- The completed list is in finishing order: take from the head while old enough (or gone).
  ids = {}
  for _, id in ipairs(redis.call('LRANGE', K_DONE, 0, limit - 1)) do
    local finished = tonumber(redis.call('HGET', job_key(id), 'f'))
    if not finished then
      local record = record_of(id)
      finished = record and tonumber((record_parts(record)))
    end
    if finished and finished > cutoff then break end
    ids[#ids + 1] = id
  end
  if #ids > 0 then redis.call('LPOP', K_DONE, #ids) end
else
  ids = redis.call('ZRANGEBYSCORE', K_DEAD, '-inf', cutoff, 'LIMIT', 0, limit)
  if #ids > 0 then redis.call('ZREM', K_DEAD, unpack(ids)) end
end
if #ids == 0 then return 0 end
if completed then delete_completed(ids) else delete_jobs(ids) end
emit('removed', table.concat(ids, ' '))
return #ids
