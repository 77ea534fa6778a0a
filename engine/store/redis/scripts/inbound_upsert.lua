-- inbound_upsert.lua: add or replace inbound supply records (purchase orders,
-- transfers) by supply id, with their SKU and node indexes, atomically.
--
-- KEYS[1]  <ns>:{inb}:rec   HASH supply id -> record JSON (routes the call)
-- KEYS[2]  <ns>:{inb}:ids   ZSET of every supply id (score 0)
-- ARGV     the prefix <ns>:{inb}:, record count, then per record: id, sku,
--          node, JSON (engine.core.future_supply.encode_inbound). The engine
--          checked the records and their nodes and sends no id twice.
-- Returns  one code per record, in order: 1 created, 2 updated (another body
--          for a known id: it replaces the old one), 3 unchanged (the same
--          JSON again: nothing written)
local rec, ids, prefix = KEYS[1], KEYS[2], ARGV[1]
local n = tonumber(ARGV[2])

-- Everything is read and decided before the first write (Redis does not roll
-- a script back): a stored record that does not decode fails the call here.
local codes, old = {}, {}
for i = 1, n do
  local base = 2 + (i - 1) * 4
  local stored = redis.call('HGET', rec, ARGV[base + 1])
  if not stored then
    codes[i] = 1
  elseif stored == ARGV[base + 4] then
    codes[i] = 3
  else
    codes[i] = 2
    old[i] = cjson.decode(stored)
  end
end

for i = 1, n do
  if codes[i] ~= 3 then
    local base = 2 + (i - 1) * 4
    local id, sku, node = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
    local was = old[i]
    if was then
      -- A revised record may have moved to another SKU or node: unindex it there.
      if was.sku ~= sku then redis.call('ZREM', prefix .. 's:' .. was.sku, id) end
      if was.node ~= node then redis.call('ZREM', prefix .. 'n:' .. was.node, id) end
    end
    redis.call('HSET', rec, id, ARGV[base + 4])
    redis.call('ZADD', ids, 0, id)
    redis.call('ZADD', prefix .. 's:' .. sku, 0, id)
    redis.call('ZADD', prefix .. 'n:' .. node, 0, id)
  end
end
return codes
