-- supply.lua: a batch of supply changes (adjust on_hand, set a versioned count,
-- set safety stock), all or none: each is checked against the rows as the
-- earlier changes of the batch left them, and nothing is written until every
-- one has passed.
--
-- KEYS     one `x` key per shard touched by the batch (on a Cluster: one slot's)
-- ARGV     now_ms, feed_maxlen, max_on_hand, dry_run (1: check only, write
--          nothing but the expiry), change_count, then per change, in batch
--          order: shard position in KEYS (1-based), index in the batch, kind
--          (1 adjust, 2 set, 3 safety, 4 follow the node's default safety
--          stock: creates no row), sku, node, value, version, event_id or
--          '', node_known (0/1, from the engine's network copy)
-- Returns  {'OK', {{on_hand, reserved, committed, safety (-1: the node's
--          default), version, applied,
--          duplicate}...}} one per change, each row as the whole batch left it;
--          {'OK'} for a dry run that passed; or the first refusal, in batch order:
--          {'UNKNOWN_NODE', index, node}; {'EVENT_MISMATCH', index, event_id};
--          {'NEGATIVE_ON_HAND', index, sku, node, value, on_hand};
--          {'ADJUST_LIMIT', index, sku, node}; {'SET_RANGE', index};
--          {'SAFETY_RANGE', index}; {'UNKNOWN_KIND', index, kind}
local now, feedmax = arg(), arg()
local max_on_hand, dry = arg_num(), arg()
local prefixes = {}
for i = 1, #KEYS do
  prefixes[i] = prefix_of(KEYS[i])
  expire_shard(prefixes[i], now, nil)
end
flush_rows(feedmax)

local batch, events, outcomes = {}, {}, {}
for _ = 1, arg_num() do
  local p = prefixes[arg_num()]
  local idx, kind, sku, node = arg_num(), arg(), arg(), arg()
  local value_s, version_s, event, known = arg(), arg(), arg(), arg()
  local value, version = tonumber(value_s), tonumber(version_s)
  if known ~= '1' then return {'UNKNOWN_NODE', idx, node} end
  local duplicate = false
  if event ~= '' then
    local fp = table.concat({kind, sku, node, value_s, version_s}, '\t')
    local seen = batch[event]
    if seen == nil then seen = redis.call('HGET', k_ev(p), event) end
    if seen then
      if seen ~= fp then return {'EVENT_MISMATCH', idx, event} end
      duplicate = true
    else
      batch[event] = fp
      events[#events + 1] = {p, event, fp}
    end
  end
  local r = row(p, sku, node)
  local applied = false
  if not duplicate then
    applied = true
    if kind == '1' then
      local on_hand = r.oh + value
      if on_hand < 0 then return {'NEGATIVE_ON_HAND', idx, sku, node, value, on_hand} end
      if on_hand > max_on_hand then return {'ADJUST_LIMIT', idx, sku, node} end
      r.oh = on_hand
    elseif kind == '2' then
      if value < 0 or value > max_on_hand then return {'SET_RANGE', idx} end
      if version <= r.v then
        -- An older count must not win; its event is still remembered, so a
        -- redelivery is a duplicate.
        applied = false
      else
        r.oh = value
        r.v = version
      end
    elseif kind == '3' then
      if value < 0 or value > max_on_hand then return {'SAFETY_RANGE', idx} end
      r.ss = value
    elseif kind == '4' then
      r.ss = -1
    else
      return {'UNKNOWN_KIND', idx, kind}
    end
    if applied and kind ~= '4' then r.create = true end
  end
  outcomes[#outcomes + 1] = {r, applied, duplicate}
end
if dry == '1' then return {'OK'} end

for _, e in ipairs(events) do redis.call('HSET', k_ev(e[1]), e[2], e[3]) end
flush_rows(feedmax)
local out = {}
for i, o in ipairs(outcomes) do
  local r = o[1]
  -- (a row left missing, by SAFETY_DEFAULT, reads as zeros)
  out[i] = {r.oh, r.rs, r.cm, r.exists and r.ss or 0, r.v, o[2] and 1 or 0, o[3] and 1 or 0}
end
return {'OK', out}
