-- inbound_read.lua: every inbound supply record of some SKUs (what Quote
-- reads for backorders), in one call.
--
-- KEYS[1]  <ns>:{inb}:rec   HASH supply id -> record JSON (routes the call)
-- ARGV     the prefix <ns>:{inb}:, then the SKUs
-- Returns  the JSON of each record of those SKUs (a flat list, SKU by SKU,
--          each SKU's in id order)
local rec, prefix = KEYS[1], ARGV[1]
-- HMGET takes the ids as arguments: a chunk stays well inside Lua's stack limit.
local CHUNK = 1000
local out = {}
for i = 2, #ARGV do
  local members = redis.call('ZRANGE', prefix .. 's:' .. ARGV[i], 0, -1)
  for first = 1, #members, CHUNK do
    local last = math.min(first + CHUNK - 1, #members)
    local found = redis.call('HMGET', rec, unpack(members, first, last))
    for j = 1, last - first + 1 do
      if found[j] then out[#out + 1] = found[j] end
    end
  end
end
return out
