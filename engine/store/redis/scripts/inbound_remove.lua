-- inbound_remove.lua: forget inbound supply records (received, or cancelled)
-- by supply id, with their SKU and node indexes, atomically.
--
-- KEYS[1]  <ns>:{inb}:rec   HASH supply id -> record JSON (routes the call)
-- KEYS[2]  <ns>:{inb}:ids   ZSET of every supply id
-- ARGV     the prefix <ns>:{inb}:, then the supply ids
-- Returns  one flag per id, in order: 1 removed, 0 not there (unknown, or
--          removed by an earlier mention in this call)
local rec, ids, prefix = KEYS[1], KEYS[2], ARGV[1]

-- Read and decode everything first, write after (no half-done call).
local found, seen = {}, {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local stored = not seen[id] and redis.call('HGET', rec, id)
  if stored then
    found[i] = cjson.decode(stored)
    seen[id] = true
  end
end

local out = {}
for i = 2, #ARGV do
  local was = found[i]
  if was then
    local id = ARGV[i]
    redis.call('HDEL', rec, id)
    redis.call('ZREM', ids, id)
    redis.call('ZREM', prefix .. 's:' .. was.sku, id)
    redis.call('ZREM', prefix .. 'n:' .. was.node, id)
    out[i - 1] = 1
  else
    out[i - 1] = 0
  end
end
return out
