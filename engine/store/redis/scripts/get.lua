-- get.lua: read a reservation's sub-reservations, after expiring what is due
-- (a read never shows a hold past its expiry).
--
-- KEYS     one `x` key per shard holding lines of the reservation
-- ARGV     now_ms, feed_maxlen, rid, line_count, 0 (no foreign lines)
-- Returns  {'OK', {sub...}}; {'MISSING'}
argi = 2
local res = open_reservation(ARGV[2])
if not res then return {'MISSING'} end
return ok_reply(res)
