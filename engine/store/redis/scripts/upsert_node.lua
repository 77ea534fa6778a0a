-- upsert_node.lua: define or replace a node of the network.
--
-- KEYS[1]  <ns>:net
-- ARGV     node id, the node's JSON (engine/store/redis/network.py)
-- Returns  {'SAME'} when the stored node is identical (nothing written), else
--          {'OK', new network version}
local id, json = arg(), arg()
local field = 'n:' .. id
if redis.call('HGET', KEYS[1], field) == json then return {'SAME'} end
redis.call('HSET', KEYS[1], field, json)
return {'OK', redis.call('HINCRBY', KEYS[1], 'ver', 1)}
