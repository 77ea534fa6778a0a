-- shard_rows.lua: every row of one shard and the id of the shard's newest feed
-- entry, read atomically: a feed reader that found a gap reloads the shard from
-- this and follows the feed after that id.
--
-- KEYS[1]  the shard's `x` key
-- ARGV     now_ms, feed_maxlen
-- Returns  {last feed id or '0-0', {sku, node, on_hand, reserved, committed,
--          safety, version, channel_used}* flattened}; channel_used is
--          ``channel TAB units TAB ...`` for the channels holding units there
local now, feedmax = arg(), arg()
local p = prefix_of(KEYS[1])
expire_shard(p, now, nil)
flush_rows(feedmax)
local out = {}
for _, sku in ipairs(redis.call('SMEMBERS', k_skus(p))) do
  for _, r in ipairs(sku_rows(p, sku)) do
    local used = {}
    for i, x in ipairs(r[7]) do used[i] = type(x) == 'number' and istr(x) or x end
    for _, x in ipairs({sku, r[1], r[2], r[3], r[4], r[5], r[6], table.concat(used, '\t')}) do
      out[#out + 1] = x
    end
  end
end
local last = redis.call('XREVRANGE', k_feed(p), '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {id, out}
