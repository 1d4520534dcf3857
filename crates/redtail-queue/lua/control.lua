-- Pauses (ARG_OP is OP_PAUSE) or resumes (OP_RESUME) delivery, or pauses (OP_PAUSE_GROUP) or
-- resumes (OP_RESUME_GROUP) the group ARG_GROUP (src/script/control.rs). The paused flag and
-- the paused groups live until resumed.
local op = ARGV[ARG_OP]
if op == OP_PAUSE then
  redis.call('SET', K_PAUSED, 1)
  emit('paused', '-')
elseif op == OP_RESUME then
  redis.call('DEL', K_PAUSED)
  if redis.call('LLEN', K_WAIT) > 0 or redis.call('ZCARD', K_PRIO) > 0 or redis.call('EXISTS', K_GRING) == 1 then
    wake()
  end
  emit('resumed', '-')
elseif op == OP_PAUSE_GROUP then
  redis.call('SADD', K_GPAUSED, ARGV[ARG_GROUP])
  redis.call('ZREM', K_GRING, ARGV[ARG_GROUP])
else
  local group = ARGV[ARG_GROUP]
  if redis.call('SREM', K_GPAUSED, group) == 1 and groups().waiting(group) then
    groups().offer(group)
    wake()
  end
end
return 1
