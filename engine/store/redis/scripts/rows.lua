-- rows.lua: read the counters of (sku, node) rows, after expiring the holds due
-- (a read never shows a hold past its expiry).
--
-- KEYS     one `x` key per shard read
-- ARGV     now_ms, feed_maxlen, channel (or ''), node_count, nodes..., then per
--          shard: sku count, skus...
-- Returns  per sku, in order: {on_hand, reserved, committed, safety (-1: the
--          node's default), version,
--          channel_used of the channel (0 without one)} for each node in order,
--          flattened (zeros for a row that does not exist)
local now, feedmax = arg(), arg()
local channel = arg()
local nodes = {}
for i = 1, arg_num() do nodes[i] = arg() end
local prefixes = {}
for i = 1, #KEYS do
  prefixes[i] = prefix_of(KEYS[i])
  expire_shard(prefixes[i], now, nil)
end
flush_rows(feedmax)
local out = {}
for _, p in ipairs(prefixes) do
  for _ = 1, arg_num() do
    local values = {}
    for i, r in ipairs(rows_of(p, arg(), nodes)) do
      local b = (i - 1) * 6
      values[b + 1], values[b + 2], values[b + 3], values[b + 4], values[b + 5] = r.oh, r.rs, r.cm, r.exists and r.ss or 0, r.v
      values[b + 6] = 0
      if channel ~= '' and r.exists then values[b + 6] = row_used(r, channel) end
    end
    out[#out + 1] = values
  end
end
return out
