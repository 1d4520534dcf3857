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


-- The value of the session under `key`, a key the script could not declare (found in an index).
-- Foreign data there (a WRONGTYPE error) reads as an error table, which read_header turns into
-- nothing; any other error is raised: on a cluster whose slot is migrating, a key already moved
-- fails with "non local key", and the script must stop there, before it has changed anything.
local function get_session(key)
  local value = redis.pcall('GET', key)
  if type(value) == 'table' and value.err and not string.find(value.err, 'WRONGTYPE', 1, true) then
    error(value)
  end
  return value
end
