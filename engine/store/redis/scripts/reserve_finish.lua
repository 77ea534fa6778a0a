-- reserve_finish.lua: step 3 of a cross-slot reservation, on the directory:
-- mark it done, or abort it (before compensating), or drop it (after).
-- Each is conditional on this owner still owning the attempt.
--
-- KEYS[1]  the directory entry  <ns>:{d}:d:<rid>
-- KEYS[2]  the directory shard's counters  <ns>:{d}:m
-- ARGV     now_ms, owner token, op ('done' | 'abort' | 'drop'), lease_ms
-- Returns  {'OK'}, or {'LOST'} when the entry is not this owner's any more (or
--          not in the state the op expects): the caller starts over.
local now = arg_num()
local own, op, lease_ms = arg(), arg(), arg_num()
local d = redis.call('HMGET', KEYS[1], 'st', 'own')
if d[2] ~= own then return {'LOST'} end
if op == 'done' then
  if d[1] ~= 'PENDING' then return {'LOST'} end
  redis.call('HSET', KEYS[1], 'st', 'DONE')
  redis.call('HDEL', KEYS[1], 'own', 'lease')
  redis.call('PERSIST', KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'done', 1)
elseif op == 'abort' then
  if d[1] ~= 'PENDING' then return {'LOST'} end
  redis.call('HSET', KEYS[1], 'st', 'ABORTING', 'lease', istr(now + lease_ms))
else
  if d[1] ~= 'ABORTING' then return {'LOST'} end
  redis.call('DEL', KEYS[1])
end
return {'OK'}
