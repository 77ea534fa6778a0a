-- reserve.lua: a whole reservation in one script (standalone Redis, or every
-- key in one Cluster slot): idempotency, validation, sourcing, holds, directory.
--
-- KEYS[1]    the directory entry  <ns>:{d}:d:<rid>
-- KEYS[2]    the directory shard's counters  <ns>:{d}:m
-- KEYS[3..]  one `x` key per shard holding lines, ascending shard order
-- ARGV       now_ms, feed_maxlen, rid, body (canonical JSON), allow_partial (0/1),
--            created_at, expires_at (seconds, repr), expires_ms, shards ("3,17"),
--            err_code, err_a, err_b (a refusal decided by the engine
--            from its network copy: CHANNEL / UNKNOWN_NODE / NOT_ELIGIBLE, or
--            '' for none; it applies only if the reservation does not exist),
--            eligible_count, eligible nodes..., channel, rule_count,
--            (node, kind, value)*, safety_count, (node, default safety stock)* (the channel's allocation rule at each eligible
--            node that has one), sourcing ('' the channel's order; '0' or '1':
--            promise-driven, '1' whole lines only; '0b' or '1b': promise-driven
--            with backorder allowances), then for each shard of KEYS[3..]: line
--            count, (index, sku, quantity, requested node or '')*, each line
--            followed, when sourcing is not '', by its candidate count (-1: the
--            channel's order) and candidates, and with 'b' by its backorder
--            allowance (units of expected inbound supply; 0: the shelf only)
-- Returns    {'OK', {sub...}} (sub = {created_at, expires_at, {{index, sku,
--            quantity, node, state, {node, qty, ...}}...}}), for a new
--            reservation and for a replay alike;
--            {'MISMATCH'}; {'BUSY'} (a cross-slot attempt is under way);
--            {err_code, err_a, err_b}; {'OOS', {{index, sku, requested, available}...}}
local now, feedmax = arg(), arg()
local rid, body, ap = arg(), arg(), arg()
local ca, ea, xm, shards = arg(), arg(), arg(), arg()
local err_code, err_a, err_b = arg(), arg(), arg()
local eligible = {}
for i = 1, arg_num() do eligible[i] = arg() end
local channel = arg()
local rules = read_rules()
local ranked, whole, backorder = read_sourcing()

local prefixes = {}
for i = 3, #KEYS do
  prefixes[#prefixes + 1] = prefix_of(KEYS[i])
  expire_shard(prefixes[#prefixes], now, nil)
end
flush_rows(feedmax)

local dir = redis.call('HMGET', KEYS[1], 'b', 'st')
if dir[1] then
  if dir[1] ~= body then return {'MISMATCH'} end
  if dir[2] ~= 'DONE' then return {'BUSY'} end
  local out = {}
  for _, p in ipairs(prefixes) do
    local s = load_sub(p, rid)
    if not s then return {'MISSING'} end
    out[#out + 1] = sub_reply(s)
  end
  return {'OK', out}
end
if err_code ~= '' then return {err_code, err_a, err_b} end

local groups, shortfalls, taken, any = {}, {}, {}, false
for i, p in ipairs(prefixes) do
  groups[i] = read_lines(ranked, backorder)
  if plan_lines(p, groups[i], eligible, taken, shortfalls, rules, channel, whole) then any = true end
end
if #shortfalls > 0 and (ap == '0' or not any) then return {'OOS', shortfalls} end

local out = {}
for i, p in ipairs(prefixes) do
  out[i] = sub_reply(create_sub(p, rid, groups[i], ca, ea, xm, '', channel))
end
-- The body carries channel, ttl, allow_partial, the lines and any fulfillment
-- context: nothing else is needed (the ranked candidates and the backorder
-- allowances are not kept: a replay is not sourced again).
redis.call('HSET', KEYS[1], 'b', body, 'st', 'DONE', 'sh', shards)
redis.call('HINCRBY', KEYS[2], 'done', 1)
flush_rows(feedmax)
return {'OK', out}
