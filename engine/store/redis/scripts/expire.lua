-- expire.lua: the sweeper's step for one shard: expire up to `limit` holds due.
--
-- KEYS[1]  the shard's `x` key
-- ARGV     now_ms, feed_maxlen, limit
-- Returns  {more (1 when `limit` holds were due: call again), rid, expires_at, ...}
local now, feedmax, limit = arg(), arg(), arg_num()
local expired = expire_shard(prefix_of(KEYS[1]), now, limit)
flush_rows(feedmax)
local out = {#expired / 2 >= limit and 1 or 0}
for i = 1, #expired do out[i + 1] = expired[i] end
return out
