-- unfulfill.lua: the compensation of a fulfill across Cluster slots that one
-- slot refused after this slot had shipped (stock changed between the check
-- and the apply, see crossslot.py): the given lines, those this slot's fulfill
-- shipped, become COMMITTED again and their units return to on_hand and
-- committed. A line no longer FULFILLED is left alone, so a second run
-- changes nothing.
--
-- KEYS     as commit.lua (one slot's)
-- ARGV     now_ms, feed_maxlen, rid, line_count, 0 (no foreign lines),
--          index_count, indexes...
-- Returns  {'OK', {sub...}}; {'MISSING'}
local feedmax = ARGV[2]
argi = 2
local res = open_reservation(feedmax)
if not res then return {'MISSING'} end

local changed = {}
for _ = 1, arg_num() do
  local pair = res.locals[arg_num()]
  if pair and pair[1].state == FULFILLED then
    local l = pair[1]
    for _, a in ipairs(l.alloc) do
      local r = row(pair[2].p, l.sku, a[1])
      r.cm = r.cm + a[2]
      r.oh = r.oh + a[2]
      add_used(r, pair[2].ch, a[2])
    end
    l.state = COMMITTED
    changed[#changed + 1] = pair
  end
end
save_changes(changed)
flush_rows(feedmax)
return ok_reply(res)
