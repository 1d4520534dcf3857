-- Prepended to every batched script (Script::batched): the work of several callers in one call.
-- `batch(each)` runs each(KEYS, ARGV) once per caller, with that caller's keys and arguments, and
-- returns one {1, reply} or {0, error message} per caller, in order. One caller's error (say a
-- WRONGTYPE from foreign data under its key) fails that caller only; as in any script, what it
-- wrote before the error stays written.
-- ARGV[1] number of callers n; ARGV[2i], ARGV[2i + 1] the key and argument counts of caller i;
-- then every caller's arguments in order. KEYS: every caller's keys in order.
local function batch(each)
  local n = tonumber(ARGV[1])
  local next_key, next_arg = 0, 1 + 2 * n
  local replies = {}
  for i = 1, n do
    local keys, argv = {}, {}
    for j = 1, tonumber(ARGV[2 * i]) do keys[j] = KEYS[next_key + j] end
    for j = 1, tonumber(ARGV[2 * i + 1]) do argv[j] = ARGV[next_arg + j] end
    next_key, next_arg = next_key + #keys, next_arg + #argv
    local ok, reply = pcall(each, keys, argv)
    if ok then
      replies[i] = {1, reply}
    else
      replies[i] = {0, type(reply) == 'table' and tostring(reply.err) or tostring(reply)}
    end
  end
  return replies
end
