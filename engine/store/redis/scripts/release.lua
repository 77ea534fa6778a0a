-- release.lua: give back the held or committed units of a reservation, or of
-- some of its lines. Releasing a released or expired line changes nothing.
--
-- KEYS     as commit.lua
-- ARGV     now_ms, feed_maxlen, rid, line_count, foreign_count, (index, state)*,
--          indexes_given (0: every line), index_count, indexes...
-- Returns  {'OK', {sub...}}; {'ILLEGAL', 'res', FULFILLED, -1, ''};
--          {'ILLEGAL', 'line', FULFILLED, index, ''}; {'EMPTY_INDEXES'};
--          {'INDEX_RANGE', index}; {'MISSING'}
local feedmax = ARGV[2]
argi = 2
local res = open_reservation(feedmax)
if not res then return {'MISSING'} end
local indexes = read_indexes()

local selected
if indexes == nil then
  if aggregate(res.states) == FULFILLED then return {'ILLEGAL', 'res', FULFILLED, -1, ''} end
  selected = local_lines(res, {[HELD] = true, [COMMITTED] = true})
else
  local bad = check_indexes(res, indexes)
  if bad then return bad end
  for _, i in ipairs(indexes) do
    if res.states[i] == FULFILLED then return {'ILLEGAL', 'line', FULFILLED, i, ''} end
  end
  selected = local_selection(res, indexes)
end

local changed = {}
for _, pair in ipairs(selected) do
  local l = pair[1]
  local column = nil
  if l.state == HELD then column = 'rs' elseif l.state == COMMITTED then column = 'cm' end
  if column then
    for _, a in ipairs(l.alloc) do
      local r = row(pair[2].p, l.sku, a[1])
      r[column] = r[column] - a[2]
      add_used(r, pair[2].ch, -a[2])
    end
    l.state = RELEASED
    changed[#changed + 1] = pair
  end
end
save_changes(changed)
flush_rows(feedmax)
return ok_reply(res)
