-- lease.lua: the expiry sweeper's lease, so one engine process sweeps at a time.
--
-- KEYS[1]  <ns>:sweeper
-- ARGV     owner token, op ('hold': take it if free or renew it if ours;
--          'release': give it up if ours), lease_ms
-- Returns  1 when this owner holds the lease after the call (or released it), else 0
local own, op, lease_ms = arg(), arg(), arg()
local current = redis.call('GET', KEYS[1])
if op == 'release' then
  if current == own then redis.call('DEL', KEYS[1]) return 1 end
  return 0
end
if current == own then
  redis.call('PEXPIRE', KEYS[1], lease_ms)
  return 1
end
if not current then
  redis.call('SET', KEYS[1], own, 'PX', lease_ms)
  return 1
end
return 0
