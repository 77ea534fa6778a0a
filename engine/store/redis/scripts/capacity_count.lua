-- capacity_count.lua: count a committed order against its nodes' daily capacity, once.
--
-- KEYS[1]     <ns>:{cap}:r:<reservation id>  the order's marker, set by its first count
-- KEYS[2..n]  <ns>:{cap}:d:<local date>:<node>  orders the node released that day
--             (every key shares the tag {cap}: one Cluster slot)
-- ARGV        seconds each key is kept (a few days)
-- Returns     1 when counted; 0 when the order was counted before (a retried
--             commit, even one retried after midnight), nothing written
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 1
