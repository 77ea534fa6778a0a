-- fulfill.lua: ship committed lines: their units leave on_hand and committed.
-- Refused (NEGATIVE) when a row has fewer units on hand than it would ship (a
-- recount left a shortage, or backordered units have not arrived): nothing is
-- shipped then. On a Cluster the engine runs it as a dry run in every slot
-- first and ships only if every slot passed (crossslot.py), undoing with
-- unfulfill.lua what shipped if a slot refuses after all.
--
-- KEYS     as commit.lua
-- ARGV     now_ms, feed_maxlen, rid, line_count, foreign_count, (index, state)*,
--          indexes_given (0: every committed line), index_count, indexes...,
--          dry_run (1: check only, write nothing but the expiry)
-- Returns  {'OK', {sub...}, {index...}}: the sub-reservations, and the lines
--          this call shipped (none for a replay); {'OK'} for a dry run that
--          passed; {'ILLEGAL', 'res', state, -1, 'committed'};
--          {'ILLEGAL', 'line', state, index, ''}; {'EMPTY_INDEXES'};
--          {'INDEX_RANGE', index}; {'NEGATIVE', quantity, sku, node, on_hand,
--          index} (index: the first line shipping from the row, which is the
--          first short one in line order); {'MISSING'}
local feedmax = ARGV[2]
argi = 2
local res = open_reservation(feedmax)
if not res then return {'MISSING'} end
local indexes = read_indexes()
local dry = arg()

local selected
if indexes == nil then
  local state = aggregate(res.states)
  if state == FULFILLED then -- a replay
    if dry == '1' then return {'OK'} end
    local reply = ok_reply(res)
    reply[3] = {}
    return reply
  end
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
local shipping, first, order = {}, {}, {}
for _, pair in ipairs(selected) do
  local l = pair[1]
  if l.state == COMMITTED then
    for _, a in ipairs(l.alloc) do
      local r = row(pair[2].p, l.sku, a[1])
      if not shipping[r] then
        shipping[r] = 0
        first[r] = l.idx
        order[#order + 1] = r
      end
      shipping[r] = shipping[r] + a[2]
    end
  end
end
for _, r in ipairs(order) do
  if r.oh < shipping[r] then return {'NEGATIVE', shipping[r], r.sku, r.node, r.oh, first[r]} end
end
if dry == '1' then return {'OK'} end

local changed, shipped = {}, {}
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
    shipped[#shipped + 1] = l.idx
  end
end
save_changes(changed)
flush_rows(feedmax)
local reply = ok_reply(res)
reply[3] = shipped
return reply
