-- carriers_set.lua: replace, or reset, the carrier table set through the API.
--
-- KEYS[1]  <ns>:net             field cv: the table's version; ver: the network's
-- KEYS[2]  {<ns>:net}:carriers  HASH doc (the table's JSON), v (its version), at
--          (when set). Its hash tag is KEYS[1]'s name: one Cluster slot for both.
-- ARGV     expected version ('' for any), the table's JSON ('' to reset to the
--          server's configured table), now (seconds, Python float repr)
-- Returns  {'STALE', current version} when the expected version is not the
--          current one (nothing written); {'SAME', current version} when the
--          stored table is that one already (nothing written); else
--          {'OK', new version, new network version}: the network version moves
--          so every engine process reloads the network, and with it the table.
local current = tonumber(redis.call('HGET', KEYS[1], 'cv') or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= current then return {'STALE', current} end
if (redis.call('HGET', KEYS[2], 'doc') or '') == ARGV[2] then return {'SAME', current} end
local version = current + 1
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], 'doc')
else
  redis.call('HSET', KEYS[2], 'doc', ARGV[2])
end
redis.call('HSET', KEYS[2], 'v', version, 'at', ARGV[3])
redis.call('HSET', KEYS[1], 'cv', version)
return {'OK', version, redis.call('HINCRBY', KEYS[1], 'ver', 1)}
