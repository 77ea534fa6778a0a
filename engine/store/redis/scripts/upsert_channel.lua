-- upsert_channel.lua: define or replace a channel; its nodes must exist and be
-- listed once (sourcing would count a node's ATP twice and oversell it).
--
-- KEYS[1]  <ns>:net
-- ARGV     channel id, the channel's JSON, node_count, nodes...
-- Returns  {'SAME'}; {'OK', new network version}; or, for the first bad node in
--          order, {'UNKNOWN_NODE', index, node} / {'DUPLICATE_NODE', index, node}
local id, json = arg(), arg()
local seen = {}
for i = 1, arg_num() do
  local node = arg()
  if redis.call('HEXISTS', KEYS[1], 'n:' .. node) == 0 then return {'UNKNOWN_NODE', i - 1, node} end
  if seen[node] then return {'DUPLICATE_NODE', i - 1, node} end
  seen[node] = true
end
local field = 'c:' .. id
if redis.call('HGET', KEYS[1], field) == json then return {'SAME'} end
redis.call('HSET', KEYS[1], field, json)
return {'OK', redis.call('HINCRBY', KEYS[1], 'ver', 1)}
