-- reserve_begin.lua: step 1 of a reservation whose keys span Cluster slots:
-- create or take over the directory entry (see engine/store/redis/crossslot.py).
--
-- KEYS[1]  the directory entry  <ns>:{d}:d:<rid>
-- ARGV     now_ms, body, created_at, expires_at, expires_ms, shards, owner token,
--          lease_ms, key_ttl_ms, err_code, err_a, err_b (as in reserve.lua)
-- Returns  {'NEW', created_at, expires_at, expires_ms}: a new attempt, with the
--          times given (also when an abandoned attempt's holds have expired);
--          {'RESUME', created_at, expires_at, expires_ms}: continue the attempt
--          this owner started, or take over one whose owner's lease lapsed;
--          {'DONE'}: the reservation exists (replay); {'BUSY'}: another engine
--          process is working on it; {'MISMATCH'}; {err_code, err_a, err_b}
local now = arg_num()
local body = arg()
local ca, ea, xm, shards = arg(), arg(), arg(), arg()
local own, lease_ms, key_ttl_ms = arg(), arg_num(), arg()
local err_code, err_a, err_b = arg(), arg(), arg()
local key = KEYS[1]

local d = redis.call('HMGET', key, 'b', 'st', 'own', 'lease', 'ca', 'ea', 'xm')
if d[1] then
  if d[1] ~= body then return {'MISMATCH'} end
  if d[2] == 'DONE' then return {'DONE'} end
  if d[3] ~= own and tonumber(d[4]) > now then return {'BUSY'} end
end
if err_code ~= '' then return {err_code, err_a, err_b} end

local lease = istr(now + lease_ms)
if d[1] and tonumber(d[7]) > now then
  -- The attempt's holds are still live: continue with its times.
  redis.call('HSET', key, 'st', 'PENDING', 'own', own, 'lease', lease)
  return {'RESUME', d[5], d[6], d[7]}
end
redis.call('HSET', key, 'b', body, 'st', 'PENDING', 'sh', shards, 'ca', ca, 'ea', ea, 'xm', xm,
  'own', own, 'lease', lease)
-- An attempt nobody finishes is forgotten once its holds are long expired.
redis.call('PEXPIRE', key, key_ttl_ms)
return {'NEW', ca, ea, xm}
