-- expire.lua: the sweeper's step for one shard: expire up to `limit` holds due.
--
-- KEYS[1]  the shard's `x` key
-- ARGV     now_ms, feed_maxlen, limit
-- Returns  {more (1 when `limit` holds were due: call again), {rid, expires_at, ...},
--          {channel, expired, ...}}: the shard's running count of expired
--          reservations by channel, counted by whichever script expired them
local now, feedmax, limit = arg(), arg(), arg_num()
local p = prefix_of(KEYS[1])
local expired = expire_shard(p, now, limit)
flush_rows(feedmax)
local counts = {}
local h = redis.call('HGETALL', k_m(p))
for i = 1, #h, 2 do
  if string.sub(h[i], 1, 4) == 'exp\t' then
    counts[#counts + 1] = string.sub(h[i], 5)
    counts[#counts + 1] = h[i + 1]
  end
end
return {#expired / 2 >= limit and 1 or 0, expired, counts}
