-- fulfill.lua: ship committed lines: their units leave on_hand and committed.
-- Refused (NEGATIVE_ON_HAND) when a row has fewer units on hand than it would
-- ship (a recount left a shortage): nothing is shipped then.
--
-- KEYS     as commit.lua
-- ARGV     now_ms, feed_maxlen, rid, line_count, foreign_count, (index, state)*,
--          indexes_given (0: every committed line), index_count, indexes...
-- Returns  {'OK', {sub...}}; {'ILLEGAL', 'res', state, -1, 'committed'};
--          {'ILLEGAL', 'line', state, index, ''}; {'EMPTY_INDEXES'};
--          {'INDEX_RANGE', index}; {'NEGATIVE', quantity, sku, node, on_hand};
--          {'MISSING'}
local feedmax = ARGV[2]
argi = 2
local res = open_reservation(feedmax)
if not res then return {'MISSING'} end
local indexes = read_indexes()

local selected
if indexes == nil then
  local state = aggregate(res.states)
  if state == FULFILLED then return ok_reply(res) end -- a replay
  if state ~= COMMITTED then return {'ILLEGAL', 'res', state, -1, 'committed'} end
  selected = local_lines(res, {[COMMITTED] = true})
else
  local bad = check_indexes(res, indexes)
  if bad then return bad end
  for _, i in ipairs(indexes) do
    local st = res.states[i]
    if st ~= COMMITTED and st ~= FULFILLED then return {'ILLEGAL', 'line', st, i, ''} end
  end
  selected = local_selection(res, indexes)
end

-- Units shipped per row, in line order, checked against on_hand before any write.
local shipping, order = {}, {}
for _, pair in ipairs(selected) do
  local l = pair[1]
  if l.state == COMMITTED then
    for _, a in ipairs(l.alloc) do
      local r = row(pair[2].p, l.sku, a[1])
      if not shipping[r] then
        shipping[r] = 0
        order[#order + 1] = r
      end
      shipping[r] = shipping[r] + a[2]
    end
  end
end
for _, r in ipairs(order) do
  if r.oh < shipping[r] then return {'NEGATIVE', shipping[r], r.sku, r.node, r.oh} end
end

local changed = {}
for _, pair in ipairs(selected) do
  local l = pair[1]
  if l.state == COMMITTED then
    for _, a in ipairs(l.alloc) do
      local r = row(pair[2].p, l.sku, a[1])
      r.cm = r.cm - a[2]
      r.oh = r.oh - a[2]
      add_used(r, pair[2].ch, -a[2])
    end
    l.state = FULFILLED
    changed[#changed + 1] = pair
  end
end
save_changes(changed)
flush_rows(feedmax)
return ok_reply(res)
