-- extend.lua: move a held reservation's expiry to now + ttl.
--
-- KEYS     as commit.lua
-- ARGV     now_ms, feed_maxlen, rid, line_count, foreign_count, (index, state)*,
--          expires_at (seconds, repr), expires_ms
-- Returns  {'OK', {sub...}}; {'ILLEGAL', 'res', state, -1, 'held'}; {'MISSING'}
local feedmax = ARGV[2]
argi = 2
local res = open_reservation(feedmax)
if not res then return {'MISSING'} end
local ea, xm = arg(), arg()

local state = aggregate(res.states)
if state ~= HELD then return {'ILLEGAL', 'res', state, -1, 'held'} end
for _, s in ipairs(res.subs) do
  redis.call('HSET', s.key, 'ea', ea, 'xm', xm)
  s.ea, s.xm = ea, xm
  reschedule(s)
end
return ok_reply(res)
