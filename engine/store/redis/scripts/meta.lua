-- meta.lua: record the namespace's shard count and layout version on first use,
-- and return what is recorded (the engine refuses to start on a mismatch).
--
-- KEYS[1]  <ns>:meta
-- ARGV     shards, format version
-- Returns  {shards, format} as stored
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'shards', ARGV[1], 'format', ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'shards', 'format')
