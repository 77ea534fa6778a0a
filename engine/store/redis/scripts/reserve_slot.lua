-- reserve_slot.lua: step 2 of a cross-slot reservation, once per slot: hold
-- the lines whose SKUs are in this slot, all or nothing within the slot unless
-- allow_partial. Idempotent per (reservation, shard): a sub-reservation of this
-- attempt (same created_at) is adopted and returned unchanged; one left by an
-- abandoned earlier attempt (another created_at) gives its units back first.
--
-- KEYS     one `x` key per shard of this slot holding lines
-- ARGV     now_ms, feed_maxlen, rid, created_at, expires_at, expires_ms, owner,
--          allow_partial (0/1), eligible_count, eligible..., channel, rule_count,
--          (node, kind, value)*, safety_count, (node, default safety stock)*, sourcing (as reserve.lua), then per shard:
--          line count, (index, sku, quantity, requested node or '')* (and
--          candidates and backorder allowances, as reserve.lua)
-- Returns  {'OK', took (0/1: any units held in this slot), {shortfall...}, {sub...}}
--          {'OOS', {{index, sku, requested, available}...}}  (nothing written)
local now, feedmax = arg(), arg()
local rid, ca, ea, xm, own, ap = arg(), arg(), arg(), arg(), arg(), arg()
local eligible = {}
for i = 1, arg_num() do eligible[i] = arg() end
local channel = arg()
local rules = read_rules()
local ranked, whole, backorder = read_sourcing()

local prefixes, existing = {}, {}
for i = 1, #KEYS do
  local p = prefix_of(KEYS[i])
  prefixes[i] = p
  expire_shard(p, now, nil)
  local s = load_sub(p, rid)
  if s and s.ca == ca then
    if s.own ~= own then
      redis.call('HSET', s.key, 'own', own)
      s.own = own
    end
    existing[i] = s
  elseif s then
    drop_sub(s)
  end
end
flush_rows(feedmax)
remove_unstarted()

local groups, shortfalls, taken, took = {}, {}, {}, false
for i, p in ipairs(prefixes) do
  groups[i] = read_lines(ranked, backorder)
  if existing[i] then
    for _, l in ipairs(existing[i].lines) do
      if #l.alloc > 0 then took = true end
    end
  elseif plan_lines(p, groups[i], eligible, taken, shortfalls, rules, channel, whole) then
    took = true
  end
end
if #shortfalls > 0 and ap == '0' then return {'OOS', shortfalls} end

local out = {}
for i, p in ipairs(prefixes) do
  local s = existing[i] or create_sub(p, rid, groups[i], ca, ea, xm, own, channel)
  out[i] = sub_reply(s)
end
flush_rows(feedmax)
return {'OK', took and 1 or 0, shortfalls, out}
