-- Pauses (ARG_OP is OP_PAUSE) or resumes (OP_RESUME) delivery (src/script/control.rs).
-- The paused flag lives until resume.
if ARGV[ARG_OP] == OP_PAUSE then
  redis.call('SET', K_PAUSED, 1)
  emit('paused', '-')
else
  redis.call('DEL', K_PAUSED)
  if redis.call('LLEN', K_WAIT) > 0 or redis.call('ZCARD', K_PRIO) > 0 then wake() end
  emit('resumed', '-')
end
return 1
