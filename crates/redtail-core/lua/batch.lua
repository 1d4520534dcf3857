-- Prepended to every batched script (Script::batched): the work of several callers in one call.
-- `batch(each)` runs each(KEYS, ARGV) once per caller, with that caller's keys and arguments,
-- and returns a flat array of two values per caller, in order: 1 and its reply, or 0 and the
-- error message. One caller's error (say a WRONGTYPE from foreign data under its key) fails that
-- caller only; as in any script, what it wrote before the error stays written.
-- The KEYS and ARGV tables given to `each` are reused for the next caller: `each` must not keep
-- them. Allocation is most of a batched script's cost, so the helper allocates little.
-- ARGV[1] number of callers n. When every caller has as many keys and arguments, ARGV[2] and
-- ARGV[3] are those counts; otherwise ARGV[2] is '' and ARGV[1 + 2i], ARGV[2 + 2i] are caller i's.
-- Then every caller's arguments in order. KEYS: every caller's keys in order.
local function batch(each)
  local n = tonumber(ARGV[1])
  local uniform = ARGV[2] ~= ''
  local key_count, arg_count = tonumber(ARGV[2]), tonumber(ARGV[3])
  local next_key, next_arg = 0, 3
  if not uniform then next_arg = 2 + 2 * n end
  local keys, argv, kept_keys, kept_args = {}, {}, 0, 0
  local replies = {}
  for i = 1, n do
    if not uniform then key_count, arg_count = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i]) end
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
