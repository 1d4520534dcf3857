-- Prepended to every batched script (Script::batched): the work of several callers in one call.
-- `batch(each)` runs each(KEYS, ARGV) once per caller, with that caller's keys and arguments,
-- and returns a flat array of two values per caller, in order: 1 and its reply, or 0 and the
-- error message. One caller's error (say a WRONGTYPE from foreign data under its key) fails that
-- caller only; as in any script, what it wrote before the error stays written.
-- The KEYS and ARGV tables given to `each` are reused for the next caller: `each` must not keep
-- them. Allocation is most of a batched script's cost, so the helper allocates little.
-- Its arguments are named in src/batch.rs (BatchArg): the number of callers n, then, when every
-- caller has as many keys and arguments, those counts; otherwise '' and each caller's two counts.
-- Then every caller's arguments in order. KEYS: every caller's keys in order.
local function batch(each)
  local n = tonumber(ARGV[BATCH_CALLERS])
  local uniform = ARGV[BATCH_KEYS] ~= ''
  local key_count, arg_count = tonumber(ARGV[BATCH_KEYS]), tonumber(ARGV[BATCH_ARGS])
  local next_key, next_arg = 0, BATCH_ARGS
  if not uniform then next_arg = BATCH_ARGS - 1 + 2 * n end
  local keys, argv, kept_keys, kept_args = {}, {}, 0, 0
  local replies = {}
  for i = 1, n do
    if not uniform then
      key_count, arg_count = tonumber(ARGV[BATCH_KEYS - 1 + 2 * i]), tonumber(ARGV[BATCH_ARGS - 1 + 2 * i])
    end
    for j = 1, key_count do keys[j] = KEYS[next_key + j] end
    for j = key_count + 1, kept_keys do keys[j] = nil end
    for j = 1, arg_count do argv[j] = ARGV[next_arg + j] end
    for j = arg_count + 1, kept_args do argv[j] = nil end
    next_key, next_arg, kept_keys, kept_args = next_key + key_count, next_arg + arg_count, key_count, arg_count
    local ok, reply = pcall(each, keys, argv)
    if ok then
      -- false, not nil: a nil would end the array.
      replies[2 * i - 1], replies[2 * i] = 1, reply == nil and false or reply
    else
      replies[2 * i - 1], replies[2 * i] = 0, type(reply) == 'table' and tostring(reply.err) or tostring(reply)
    end
  end
  return replies
end
