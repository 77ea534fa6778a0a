-- audit.lua: everything the audit needs from one shard, read atomically (it
-- expires nothing: a hold left past its expiry is what the audit looks for).
--
-- KEYS[1]  the shard's `x` key
-- ARGV     (none)
-- flags: no-writes
-- Returns  {rows, unbacked, holding, unscheduled, subs, done}:
--          rows = {sku, node, on_hand, reserved, committed, safety, version,
--                  held by live lines, committed by live lines}*  (flattened)
--          unbacked = {sku, node, held, committed}* for lines on rows that do not exist
--          holding = {rid, expires_at, expires_ms}* sub-reservations holding units
--                  (the caller reports those long past their expiry)
--          unscheduled = {rid}* sub-reservations holding units but absent
--                  from the expiry ZSET (or with another score): they would never expire
--          subs = number of sub-reservations, done = completed directory entries here
--          usage = {sku, node, channel, channel_used, held + committed by the
--                  channel's live lines}* for every (row, channel) where either is not 0
local p = prefix_of(KEYS[1])
local held, committed, keys = {}, {}, {}
local by_channel = {} -- sku TAB node TAB channel -> units of the channel's live lines
local holding, unscheduled = {}, {}
local rids = redis.call('SMEMBERS', k_rids(p))
for _, rid in ipairs(rids) do
  local s = load_sub(p, rid)
  if s then
    for _, l in ipairs(s.lines) do
      local target = nil
      if l.state == HELD then target = held elseif l.state == COMMITTED then target = committed end
      if target then
        for _, a in ipairs(l.alloc) do
          local k = l.sku .. '\t' .. a[1]
          if not keys[k] then keys[k] = {l.sku, a[1]} end
          target[k] = (target[k] or 0) + a[2]
          if s.ch then
            local kc = k .. '\t' .. s.ch
            by_channel[kc] = (by_channel[kc] or 0) + a[2]
          end
        end
      end
    end
    if has_held(s) then
      holding[#holding + 1] = rid
      holding[#holding + 1] = s.ea
      holding[#holding + 1] = s.xm
      if tonumber(redis.call('ZSCORE', k_x(p), rid)) ~= tonumber(s.xm) then
        unscheduled[#unscheduled + 1] = rid
      end
    end
  end
end

local rows_out, seen, usage = {}, {}, {}
for _, sku in ipairs(redis.call('SMEMBERS', k_skus(p))) do
  for _, r in ipairs(sku_rows(p, sku)) do
    local k = sku .. '\t' .. r[1]
    seen[k] = true
    local u = r[7]
    for i = 1, #u, 2 do
      local kc = k .. '\t' .. u[i]
      for _, x in ipairs({sku, r[1], u[i], u[i + 1], by_channel[kc] or 0}) do usage[#usage + 1] = x end
      by_channel[kc] = nil
    end
    for _, x in ipairs({sku, r[1], r[2], r[3], r[4], r[5], r[6], held[k] or 0, committed[k] or 0}) do
      rows_out[#rows_out + 1] = x
    end
  end
end
local unbacked = {}
for k, pair in pairs(keys) do
  if not seen[k] then
    for _, x in ipairs({pair[1], pair[2], held[k] or 0, committed[k] or 0}) do
      unbacked[#unbacked + 1] = x
    end
  end
end
for kc, units in pairs(by_channel) do
  if units ~= 0 then
    local f = split_tabs(kc)
    for _, x in ipairs({f[1], f[2], f[3], 0, units}) do usage[#usage + 1] = x end
  end
end
local done = tonumber(redis.call('HGET', k_m(p), 'done')) or 0
return {rows_out, unbacked, holding, unscheduled, #rids, done, usage}
