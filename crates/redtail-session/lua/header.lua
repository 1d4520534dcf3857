-- Prepended to every session script when it is loaded (scripts cannot share code on the server).
-- A stored session is a JSON header, a newline, then the data. Returns the header table and the
-- position of the newline, or nil for anything that is not a session (foreign or corrupt data,
-- an error reply from redis.pcall).
local function read_header(value)
  if type(value) ~= 'string' then return nil end
  local newline = string.find(value, '\n', 1, true)
  if not newline then return nil end
  local ok, header = pcall(cjson.decode, string.sub(value, 1, newline - 1))
  if ok and type(header) == 'table' then return header, newline end
  return nil
end

