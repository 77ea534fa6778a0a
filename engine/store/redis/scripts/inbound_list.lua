-- inbound_list.lua: one page of inbound supply records in supply id order,
-- optionally of one SKU and/or one node.
--
-- KEYS[1]  <ns>:{inb}:rec   HASH supply id -> record JSON (routes the call)
-- KEYS[2]  <ns>:{inb}:ids   ZSET of every supply id (score 0: ordered by id)
-- ARGV     the prefix <ns>:{inb}:, sku ('' any), node ('' any), after (''
--          from the first id; else ids greater than this one), limit (1-1000)
-- Returns  {more, JSON...}: up to `limit` records; more = 1 when at least one
--          further record matches (the next page starts after the last one)
local rec, prefix = KEYS[1], ARGV[1]
local sku, node, after, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local index = KEYS[2]
if sku ~= '' then
  index = prefix .. 's:' .. sku
elseif node ~= '' then
  index = prefix .. 'n:' .. node
end
-- With both filters the SKU's index (a SKU has few records) is walked and
-- each record's node compared.
local check_node = sku ~= '' and node ~= ''
local start = '-'
if after ~= '' then start = '(' .. after end
local out = {0}
local batch = limit + 1
while true do
  local members = redis.call('ZRANGEBYLEX', index, start, '+', 'LIMIT', 0, batch)
  if #members == 0 then return out end
  local found = redis.call('HMGET', rec, unpack(members))
  for i = 1, #members do
    local json = found[i]
    if json and (not check_node or cjson.decode(json).node == node) then
      if #out - 1 == limit then
        out[1] = 1
        return out
      end
      out[#out + 1] = json
    end
  end
  if #members < batch then return out end
  start = '(' .. members[#members]
end
