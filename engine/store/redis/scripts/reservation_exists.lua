-- reservation_exists.lua: does a reservation id have a directory entry?
-- The sold-out fast path refuses a reserve from the availability view without
-- running the reserve script, but a replay of a reservation that already
-- exists must still get its stored result; this one-key read (in the slot of
-- the reservation id, not of the hot SKU) keeps that exact.
--
-- KEYS[1]  the directory entry  <ns>:{d}:d:<rid>
-- ARGV     none
-- Returns  1 if the entry exists (in any status), else 0
return redis.call('EXISTS', KEYS[1])
