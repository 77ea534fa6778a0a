-- reserve_cancel.lua: compensation of a cross-slot reservation, once per slot:
-- delete the sub-reservations this owner created or adopted, giving their held
-- units back and removing the rows their backorder holds started if those are
-- back to nothing. Idempotent: a missing one, or one another owner adopted, is left.
--
-- KEYS     one `x` key per shard of this slot holding lines
-- ARGV     now_ms, feed_maxlen, rid, owner token
-- Returns  {'OK', number of sub-reservations deleted}
local now, feedmax = arg(), arg()
local rid, own = arg(), arg()
local dropped = 0
for i = 1, #KEYS do
  local p = prefix_of(KEYS[i])
  expire_shard(p, now, nil)
  local s = load_sub(p, rid)
  if s and s.own == own then
    drop_sub(s)
    dropped = dropped + 1
  end
end
flush_rows(feedmax)
remove_unstarted()
return {'OK', dropped}
