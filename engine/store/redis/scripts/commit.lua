-- commit.lua: turn every held line of a reservation into a committed order line.
--
-- KEYS     one `x` key per shard holding lines of the reservation (on a Cluster:
--          those of one slot; the other lines' states come in ARGV)
-- ARGV     now_ms, feed_maxlen, rid, line_count, foreign_count, (index, state)*
-- Returns  {'OK', {sub...}} (as reserve.lua); {'ILLEGAL', 'res', state, -1, ''};
--          {'MISSING'} (a sub-reservation the directory promises is absent)
local feedmax = ARGV[2]
argi = 2
local res = open_reservation(feedmax)
if not res then return {'MISSING'} end

local state = aggregate(res.states)
if state == COMMITTED or state == FULFILLED then return ok_reply(res) end -- a replay
if state ~= HELD then return {'ILLEGAL', 'res', state, -1, ''} end

local changed = local_lines(res, {[HELD] = true})
for _, pair in ipairs(changed) do
  local l = pair[1]
  for _, a in ipairs(l.alloc) do
    local r = row(pair[2].p, l.sku, a[1])
    r.rs = r.rs - a[2]
    r.cm = r.cm + a[2]
  end
  l.state = COMMITTED
end
save_changes(changed)
flush_rows(feedmax)
return ok_reply(res)
