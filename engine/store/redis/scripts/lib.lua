-- lib.lua: helpers shared by the scripts; not a script of its own. The loader
-- (engine/store/redis/scripts.py) puts in front of each script the top-level
-- definitions below that it uses, directly or through one another, so each
-- script sent to Redis is one self-contained chunk that creates no closure it
-- does not need (Redis runs the whole chunk on every call). A definition is a
-- line starting with `local ` at the margin, with the comments at the margin
-- just above it; keep helpers in that shape.
--
-- Conventions every script follows:
--   * ARGV[1] is `now` in ms (from the engine's clock; scripts never call TIME),
--     ARGV[2] the feed's approximate MAXLEN, for the scripts that change rows.
--   * A shard is named by its `x` key (`<ns>:{tag}:x`); its other keys are built
--     from that key's prefix below. They carry the same hash tag, so they are in
--     the slot of the declared key.
--   * Everything is checked before the first write that belongs to the operation
--     (Redis does not roll a script back). Expiring the holds due at `now` comes
--     first and is written even when the operation is then refused, exactly as
--     the reference ledger does.
--   * Replies are arrays whose first element is 'OK' or an error code that
--     engine/store/redis/replies.py turns into the engine's domain error.

local HELD, COMMITTED, FULFILLED, RELEASED, EXPIRED = 1, 2, 3, 4, 5

-- ------------------------------------------------------------------ arguments

local argi = 0
local function arg()
  argi = argi + 1
  return ARGV[argi]
end
local function arg_num()
  return tonumber(arg())
end

-- ----------------------------------------------------------------------- keys
-- Mirrors engine/store/redis/keys.py.

local function prefix_of(xkey)
  return string.sub(xkey, 1, -2) -- '<ns>:{tag}:x' -> '<ns>:{tag}:'
end
local function k_sku(p, sku) return p .. 's:' .. sku end
local function k_skus(p) return p .. 'skus' end
local function k_sub(p, rid) return p .. 'r:' .. rid end
local function k_rids(p) return p .. 'rids' end
local function k_x(p) return p .. 'x' end
local function k_ev(p) return p .. 'ev' end
local function k_m(p) return p .. 'm' end
local function k_feed(p) return p .. 'feed' end

-- -------------------------------------------------------------------- helpers

-- Counters are integers well below 2^53; '%d' never switches to exponent form.
local function istr(n)
  return string.format('%d', n)
end

local function split_tabs(s)
  local out, i, n = {}, 1, 0
  while true do
    local j = string.find(s, '\t', i, true)
    n = n + 1
    if not j then
      out[n] = string.sub(s, i)
      return out
    end
    out[n] = string.sub(s, i, j - 1)
    i = j + 1
  end
end

local function aggregate(states)
  -- The reservation's state from its lines' (engine.core.types.aggregate_state).
  local seen = {}
  for _, st in pairs(states) do seen[st] = true end
  if seen[HELD] then return HELD end
  if seen[COMMITTED] then return COMMITTED end
  if seen[FULFILLED] then return FULFILLED end
  if seen[EXPIRED] then return EXPIRED end
  return RELEASED
end

-- ----------------------------------------------------------------------- rows
-- Rows are read once into a cache, changed there, and written back by
-- flush_rows() with one feed entry per changed row. A script that refuses an
-- operation returns before flushing, so its tentative changes are never written.

-- A row's `ss` is its own safety stock, or -1 (also read for a missing field)
-- while it follows its node's default; the defaults are not in the row's slot,
-- so the scripts that need them get them in ARGV (read_rules) and eff_ss()
-- resolves them. Everything else (the feed, rows.lua, supply.lua) passes -1 on
-- for the engine to resolve from its network copy.
local ROW_FIELDS = {':oh', ':rs', ':cm', ':ss', ':v'}
local node_ss = {}
local rows = {}
local row_list = {}

local function new_row(p, sku, node, values)
  local r = {
    p = p, key = k_sku(p, sku), sku = sku, node = node, exists = values[5] ~= false,
    oh = tonumber(values[1]) or 0, rs = tonumber(values[2]) or 0, cm = tonumber(values[3]) or 0,
    ss = tonumber(values[4]) or -1, v = tonumber(values[5]) or 0, create = false,
    -- channel_used: stored values read so far (uv), pending changes (ud) in
    -- the order the channels were first changed (uch)
    uv = {}, ud = {}, uch = {},
  }
  r.o = {r.oh, r.rs, r.cm, r.ss, r.v}
  rows[p .. '\t' .. sku .. '\t' .. node] = r
  row_list[#row_list + 1] = r
  return r
end

local function row(p, sku, node)
  local r = rows[p .. '\t' .. sku .. '\t' .. node]
  if r then return r end
  return new_row(p, sku, node, redis.call('HMGET', k_sku(p, sku),
    node .. ':oh', node .. ':rs', node .. ':cm', node .. ':ss', node .. ':v'))
end

-- The rows of one SKU at several nodes, with one HMGET per 200 rows not cached
-- yet (a channel may have thousands of nodes; unpack() takes ~8000 values).
local function rows_of(p, sku, nodes)
  local missing = {}
  for _, node in ipairs(nodes) do
    if not rows[p .. '\t' .. sku .. '\t' .. node] then missing[#missing + 1] = node end
  end
  for first = 1, #missing, 200 do
    local chunk, fields = {}, {}
    for i = first, math.min(first + 199, #missing) do
      local node = missing[i]
      chunk[#chunk + 1] = node
      for _, suffix in ipairs(ROW_FIELDS) do fields[#fields + 1] = node .. suffix end
    end
    local values = redis.call('HMGET', k_sku(p, sku), unpack(fields))
    for i, node in ipairs(chunk) do
      local b = (i - 1) * 5
      new_row(p, sku, node, {values[b + 1], values[b + 2], values[b + 3], values[b + 4], values[b + 5]})
    end
  end
  local out = {}
  for i, node in ipairs(nodes) do out[i] = rows[p .. '\t' .. sku .. '\t' .. node] end
  return out
end

-- The field of a row's channel_used: TAB-separated, since node and channel
-- ids may contain ':' but never whitespace.
local function used_field(node, ch)
  return node .. '\t' .. ch
end

-- Units of channel `ch` held or committed at row r, pending changes included.
local function row_used(r, ch)
  local v = r.uv[ch]
  if v == nil then
    v = tonumber(redis.call('HGET', r.key, used_field(r.node, ch))) or 0
    r.uv[ch] = v
  end
  return v + (r.ud[ch] or 0)
end

-- Every channel's units count at every row, whatever its rules (a rule added
-- later must find them; a script cannot recount a shard's reservations).
local function add_used(r, ch, delta)
  if ch == nil or ch == '' then return end -- a sub-reservation from before channel counters
  if r.ud[ch] == nil then r.uch[#r.uch + 1] = ch end
  r.ud[ch] = (r.ud[ch] or 0) + delta
end

-- Writes the pending channel_used changes of row r; returns the feed's
-- 'u:<channel>', value pairs (new absolute values). A counter back at 0 is
-- deleted: rows carry fields only for channels holding units there.
local function flush_used(r)
  local feed = {}
  for _, ch in ipairs(r.uch) do
    local d = r.ud[ch]
    if d ~= 0 then
      local field = used_field(r.node, ch)
      local v = redis.call('HINCRBY', r.key, field, d)
      if v == 0 then redis.call('HDEL', r.key, field) end
      r.uv[ch] = v
      feed[#feed + 1] = 'u:' .. ch
      feed[#feed + 1] = istr(v)
    end
  end
  r.ud, r.uch = {}, {}
  return feed
end

local function flush_rows(feedmax)
  for _, r in ipairs(row_list) do
    local o = r.o
    local values = {r.oh, r.rs, r.cm, r.ss, r.v}
    local changed = {}
    for i = 1, 5 do
      -- A new row is written whole; an existing one only where it changed.
      if values[i] ~= o[i] or (not r.exists and r.create) then
        changed[#changed + 1] = r.node .. ROW_FIELDS[i]
        changed[#changed + 1] = istr(values[i])
      end
    end
    if (#changed > 0 or #r.uch > 0) and (r.exists or r.create) then
      if #changed > 0 then redis.call('HSET', r.key, unpack(changed)) end
      if not r.exists then
        redis.call('SADD', k_skus(r.p), r.sku)
        r.exists = true
      end
      local used = flush_used(r)
      redis.call('XADD', k_feed(r.p), 'MAXLEN', '~', feedmax, '*', 'sku', r.sku, 'node', r.node,
        'oh', istr(r.oh), 'rs', istr(r.rs), 'cm', istr(r.cm), 'ss', istr(r.ss), 'v', istr(r.v), unpack(used))
      r.o = values
    end
  end
end

-- Every existing row of one SKU, read whole: {node, on_hand, reserved,
-- committed, safety, version} each, in field order (audit, resync).
local function sku_rows(p, sku)
  local h = redis.call('HGETALL', k_sku(p, sku))
  local by_node, nodes, used = {}, {}, {}
  for i = 1, #h, 2 do
    local tab = string.find(h[i], '\t', 1, true)
    local node, field
    if tab then
      node = string.sub(h[i], 1, tab - 1)
    else
      -- The suffix is the part after the last ':' (node ids may contain ':').
      local cut = string.find(h[i], ':[a-z]+$')
      node, field = string.sub(h[i], 1, cut - 1), string.sub(h[i], cut + 1)
    end
    if not by_node[node] then
      by_node[node] = {}
      used[node] = {}
      nodes[#nodes + 1] = node
    end
    if tab then
      local u = used[node]
      u[#u + 1] = string.sub(h[i], tab + 1)
      u[#u + 1] = tonumber(h[i + 1])
    else
      by_node[node][field] = tonumber(h[i + 1])
    end
  end
  local out = {}
  for _, node in ipairs(nodes) do
    local v = by_node[node]
    if v.v then out[#out + 1] = {node, v.oh or 0, v.rs or 0, v.cm or 0, v.ss or -1, v.v, used[node]} end
  end
  return out
end

-- ----------------------------------------------------------- sub-reservations

local function encode_line(l)
  local parts = {l.sku, istr(l.qty), l.node, istr(l.state)}
  for _, a in ipairs(l.alloc) do
    parts[#parts + 1] = a[1]
    parts[#parts + 1] = istr(a[2])
  end
  return table.concat(parts, '\t')
end

local function decode_line(idx, text)
  local f = split_tabs(text)
  local l = {idx = idx, sku = f[1], qty = tonumber(f[2]), node = f[3], state = tonumber(f[4]), alloc = {}}
  for j = 5, #f, 2 do l.alloc[#l.alloc + 1] = {f[j], tonumber(f[j + 1])} end
  return l
end

local function load_sub(p, rid)
  local h = redis.call('HGETALL', k_sub(p, rid))
  if #h == 0 then return nil end
  local s = {p = p, rid = rid, key = k_sub(p, rid), lines = {}, own = ''}
  for i = 1, #h, 2 do
    local f = h[i]
    if string.byte(f, 1) == 76 then -- 'L'
      s.lines[#s.lines + 1] = decode_line(tonumber(string.sub(f, 2)), h[i + 1])
    else
      s[f] = h[i + 1]
    end
  end
  table.sort(s.lines, function(a, b) return a.idx < b.idx end)
  return s
end

local function has_held(s)
  for _, l in ipairs(s.lines) do
    if l.state == HELD then return true end
  end
  return false
end

-- Writes the given lines of a sub-reservation back.
local function save_lines(s, lines)
  if #lines == 0 then return end
  local args = {}
  for _, l in ipairs(lines) do
    args[#args + 1] = 'L' .. l.idx
    args[#args + 1] = encode_line(l)
  end
  redis.call('HSET', s.key, unpack(args))
end

-- Keeps the sub-reservation in the expiry ZSET exactly while it holds units.
local function reschedule(s)
  if has_held(s) then
    redis.call('ZADD', k_x(s.p), s.xm, s.rid)
  else
    redis.call('ZREM', k_x(s.p), s.rid)
  end
end

-- Gives back the held units of a sub-reservation and deletes it (compensation,
-- or a stale sub-reservation of an abandoned attempt). The rows its backorder
-- holds started (its 'nw' field) are marked `unstart`: the script removes
-- them after flushing if they are back to nothing.
local function drop_sub(s)
  for _, l in ipairs(s.lines) do
    if l.state == HELD then
      for _, a in ipairs(l.alloc) do
        local r = row(s.p, l.sku, a[1])
        r.rs = r.rs - a[2]
        add_used(r, s.ch, -a[2])
      end
    end
  end
  if s.nw then
    local started = split_tabs(s.nw)
    for i = 1, #started, 2 do row(s.p, started[i], started[i + 1]).unstart = true end
  end
  redis.call('DEL', s.key)
  redis.call('SREM', k_rids(s.p), s.rid)
  redis.call('ZREM', k_x(s.p), s.rid)
end

-- After flushing (which has published their last counters to the feed):
-- removes the rows a dropped cross-slot attempt started that are back to
-- nothing at all, so a refused reservation leaves no row behind, as on one
-- slot (reserve.lua refuses before it writes). A row anything else has put
-- counters on since (stock, a safety level, a count's version, a hold) stays.
-- No channel_used field is left: they sum to reserved + committed, 0 here.
-- The views keep a row of zeros, which reads exactly as no row.
local function remove_unstarted()
  for _, r in ipairs(row_list) do
    if r.unstart and r.exists and r.oh == 0 and r.rs == 0 and r.cm == 0 and r.ss == -1 and r.v == 0 then
      local fields = {}
      for i, suffix in ipairs(ROW_FIELDS) do fields[i] = r.node .. suffix end
      redis.call('HDEL', r.key, unpack(fields))
      if redis.call('EXISTS', r.key) == 0 then redis.call('SREM', k_skus(r.p), r.sku) end
      r.exists, r.create = false, false
    end
    r.unstart = nil
  end
end

local function sub_reply(s)
  local lines = {}
  for _, l in ipairs(s.lines) do
    local al = {}
    for _, a in ipairs(l.alloc) do
      al[#al + 1] = a[1]
      al[#al + 1] = a[2]
    end
    lines[#lines + 1] = {l.idx, l.sku, l.qty, l.node, l.state, al}
  end
  return {s.ca, s.ea, lines}
end

-- --------------------------------------------------------------------- expiry

-- Expires the holds of shard p due at `now` (a string in ms, used verbatim as
-- the ZSET bound); `limit` bounds the work of one sweeper call (nil: all, as a
-- script must before it decides anything). Row changes go to the row cache;
-- the caller flushes. Returns rid, expires_at pairs.
local function expire_shard(p, now, limit)
  local x = k_x(p)
  local due
  if limit then
    due = redis.call('ZRANGEBYSCORE', x, '-inf', now, 'LIMIT', 0, limit)
  else
    due = redis.call('ZRANGEBYSCORE', x, '-inf', now)
  end
  if #due == 0 then return due end
  local out = {}
  local counted = {}
  for _, rid in ipairs(due) do
    local s = load_sub(p, rid)
    if s then
      local changed = {}
      for _, l in ipairs(s.lines) do
        if l.state == HELD then
          for _, a in ipairs(l.alloc) do
            local r = row(p, l.sku, a[1])
            r.rs = r.rs - a[2]
            add_used(r, s.ch, -a[2])
          end
          l.state = EXPIRED
          changed[#changed + 1] = l
          -- A reservation's lines may live in several shards: the one with its
          -- first line counts the expiry, once, if that line was still held (as
          -- the embedded store counts; a stale sub of a cross-slot attempt that
          -- was never acknowledged is counted too: it cannot tell from here).
          if l.idx == 0 then counted[s.ch or ''] = (counted[s.ch or ''] or 0) + 1 end
        end
      end
      save_lines(s, changed)
      out[#out + 1] = rid
      out[#out + 1] = s.ea
    end
  end
  -- Expiries by channel, whichever script ran them (this lazy path included):
  -- the sweeper reports what these counters gained (metrics).
  for ch, n in pairs(counted) do redis.call('HINCRBY', k_m(p), 'exp\t' .. ch, n) end
  if limit then
    redis.call('ZREM', x, unpack(due))
  else
    redis.call('ZREMRANGEBYSCORE', x, '-inf', now)
  end
  return out
end

-- ------------------------------------------------------- reservation sourcing

-- engine.core.allocation_rules.channel_allowance: units a channel may still
-- take at a row under its rule (kind 1 SHARE percent, 2 CAP, 3 PROTECT units).
-- The share is computed without a product above 2^53 (Lua numbers are doubles).
-- The safety stock in effect at row r: its own, else its node's default.
local function eff_ss(r)
  if r.ss >= 0 then return r.ss end
  return node_ss[r.node] or 0
end

local function allowance(oh, rs, cm, ss, kind, value, used)
  local atp = oh - rs - cm - ss
  if atp <= 0 then return 0 end
  local room
  if kind == 1 then
    local sellable = oh - ss
    local quota = 0
    if sellable > 0 then
      local rest = sellable % 100
      quota = (sellable - rest) / 100 * value + math.floor(rest * value / 100)
    end
    room = quota - used
  elseif kind == 2 then
    room = value - used
  elseif kind == 3 then
    room = atp - value
  else
    return atp
  end
  if room <= 0 then return 0 end
  if room < atp then return room end
  return atp
end

-- The reserving channel's rules by node, {kind, value}, read from ARGV:
-- count, then (node, kind, value)*. Nodes without a rule are absent. Then the
-- default safety stock of the eligible nodes that have one (into node_ss):
-- count, then (node, units)*.
local function read_rules()
  local rules = {}
  for _ = 1, arg_num() do
    local node = arg()
    rules[node] = {arg_num(), arg_num()}
  end
  for _ = 1, arg_num() do
    local node = arg()
    node_ss[node] = arg_num()
  end
  return rules
end

-- The reference ledger's sourcing: the first candidate that covers the whole
-- line, else (unless `whole`: no split) greedily across candidates in their
-- order. Rows are read one candidate at a time, so the usual case (the first
-- node has the units) reads one. `taken` holds what earlier lines of the same
-- request took, by row. Where the channel `ch` has a rule, a node gives its
-- allowance, not its ATP (what this request took counts as the channel's).
-- Candidates never repeat a node (the engine filters explicit lists as the
-- ledgers do), so no row's ATP is counted twice.
local function source(p, sku, qty, candidates, taken, rules, ch, whole)
  local free = {}
  for _, node in ipairs(candidates) do
    local r = row(p, sku, node)
    local t = taken[r] or 0
    local rule = rules[node]
    local atp
    if rule then
      atp = allowance(r.oh, r.rs + t, r.cm, eff_ss(r), rule[1], rule[2], row_used(r, ch) + t)
    else
      atp = r.oh - r.rs - r.cm - eff_ss(r) - t
    end
    if atp > 0 then
      if atp >= qty then return {{node, qty, r}} end
      free[#free + 1] = {node, atp, r}
    end
  end
  if whole then return {} end
  local alloc, remaining = {}, qty
  for _, f in ipairs(free) do
    local q = math.min(f[2], remaining)
    alloc[#alloc + 1] = {f[1], q, f[3]}
    remaining = remaining - q
    if remaining == 0 then break end
  end
  return alloc
end

-- The backorder rule (engine.core.ledger PureLedger._hold_backorder): a line
-- allowed `units` of inbound supply expected at its one node is held whole
-- there or not at all. With `a` the row's raw ATP less what this request took
-- there, and `w` what an ordinary line could take (the channel's allowance
-- where it has a rule, else `a`; never below 0), the line is held when `w`
-- covers it, or when the channel has no rule at the node and the shelf plus
-- the supply not yet spoken for covers it (qty <= a + units): the row's ATP
-- then ends at no less than -units. A channel with a rule at the node (any
-- kind) takes no backorders there: its line is held only as an ordinary one
-- (qty <= w). A missing row reads as zeros but for its node's default safety stock (the
-- hold starts it, following that default). `candidates` is the one
-- node, or empty when the line's one candidate is not usable (it gets nothing).
-- Returns the allocation ({} or {{node, qty, row}}) and the figure a shortfall
-- reports: `w`, as for an ordinary line.
local function source_backorder(p, sku, qty, candidates, units, taken, rules, ch)
  if #candidates ~= 1 then return {}, 0 end
  local node = candidates[1]
  local r = row(p, sku, node)
  local t = taken[r] or 0
  local a = r.oh - r.rs - r.cm - eff_ss(r) - t
  local rule = rules[node]
  local w = a
  if rule then
    -- What this request took counts as the channel's, exactly as in source().
    w = allowance(r.oh, r.rs + t, r.cm, eff_ss(r), rule[1], rule[2], row_used(r, ch) + t)
  end
  if w < 0 then w = 0 end
  -- A ruled channel takes no backorders at the node: an ordinary line only.
  if qty <= w or (not rule and qty <= a + units) then
    return {{node, qty, r}}, qty
  end
  return {}, w
end

-- The sourcing mode of a reserve, from ARGV: '' (the channel's order), or
-- promise-driven sourcing: '0' (lines may split) or '1' (whole lines only),
-- whose lines carry their ranked candidates (see read_lines); a 'b' after the
-- digit ('0b', '1b'): the lines also carry their backorder allowance. Returns
-- ranked, whole, backorder.
local function read_sourcing()
  local mode = arg()
  return mode ~= '', string.sub(mode, 1, 1) == '1', string.sub(mode, 2, 2) == 'b'
end

-- Reads the lines of one shard group from ARGV: count, then (index, sku, qty,
-- node)*; with `ranked`, each line continues with a candidate count (-1: the
-- channel's order) and the candidates; with `backorder` too, then with the
-- line's backorder allowance (units, 0: from the shelf only).
local function read_lines(ranked, backorder)
  local n = arg_num()
  local lines = {}
  for i = 1, n do
    local l = {idx = arg_num(), sku = arg(), qty = arg_num(), node = arg(), bo = 0}
    if ranked then
      local count = arg_num()
      if count >= 0 then
        local cands = {}
        for j = 1, count do cands[j] = arg() end
        l.cands = cands
      end
      if backorder then l.bo = arg_num() end
    end
    lines[i] = l
  end
  return lines
end

-- Plans holds for the lines of one shard: allocations and shortfalls, no writes.
-- Returns whether anything was allocated.
local function plan_lines(p, lines, eligible, taken, shortfalls, rules, ch, whole)
  local any = false
  for _, l in ipairs(lines) do
    local available
    if l.bo > 0 then
      -- Held at its one node (the engine checked there is one): never the
      -- channel's order, even if a malformed call left the line without it.
      local one = l.cands or {}
      if l.node ~= '' then one = {l.node} end
      l.alloc, available = source_backorder(p, l.sku, l.qty, one, l.bo, taken, rules, ch)
    else
      local candidates = l.cands or eligible
      if l.node ~= '' then candidates = {l.node} end
      l.alloc = source(p, l.sku, l.qty, candidates, taken, rules, ch, whole)
    end
    local allocated = 0
    for _, a in ipairs(l.alloc) do
      allocated = allocated + a[2]
      taken[a[3]] = (taken[a[3]] or 0) + a[2]
      any = true
    end
    if allocated < l.qty then
      shortfalls[#shortfalls + 1] = {l.idx, l.sku, l.qty, available or allocated}
    end
  end
  return any
end

-- Writes a new sub-reservation for planned lines: the holds, the sub, its
-- expiry entry. Lines with nothing allocated are RELEASED from the start.
local function create_sub(p, rid, lines, ca, ea, xm, own, ch)
  local s = {p = p, rid = rid, key = k_sub(p, rid), lines = lines, ca = ca, ea = ea, xm = xm, own = own, ch = ch}
  -- The channel is kept with the lines: expiry and the transitions run in this
  -- shard, which may not hold the directory entry.
  local args = {'ca', ca, 'ea', ea, 'xm', xm, 'ch', ch}
  if own ~= '' then
    args[9] = 'own'
    args[10] = own
  end
  local started = {}
  for _, l in ipairs(lines) do
    if #l.alloc > 0 then
      l.state = HELD
      for _, a in ipairs(l.alloc) do
        local r = a[3]
        -- Only a backorder hold lands on a row that does not exist: it starts
        -- the row (on_hand 0), written whole by flush_rows with its feed entry.
        if not r.exists and not r.create then
          r.create = true
          started[#started + 1] = l.sku
          started[#started + 1] = a[1]
        end
        r.rs = r.rs + a[2]
        add_used(r, ch, a[2])
      end
    else
      l.state = RELEASED
    end
    args[#args + 1] = 'L' .. l.idx
    args[#args + 1] = encode_line(l)
  end
  if own ~= '' and #started > 0 then
    -- A cross-slot attempt may still be refused in another slot: its
    -- compensation removes the rows it started ('nw': sku, node pairs).
    args[#args + 1] = 'nw'
    args[#args + 1] = table.concat(started, '\t')
  end
  redis.call('HSET', s.key, unpack(args))
  redis.call('SADD', k_rids(p), rid)
  if has_held(s) then redis.call('ZADD', k_x(p), xm, rid) end
  return s
end

-- ------------------------------------------------- transitions (by reservation)

-- Common start of commit/release/fulfill/extend/get: expire the groups, load
-- the reservation's sub-reservations (one per KEYS entry) and the state of
-- every line: local ones from the subs, the others (lines in other slots of a
-- Redis Cluster, read by the caller just before) from ARGV.
-- ARGV after now and feedmax: rid, total line count, foreign count, (index, state)*.
local function open_reservation(feedmax)
  local now = ARGV[1]
  for i = 1, #KEYS do expire_shard(prefix_of(KEYS[i]), now, nil) end
  flush_rows(feedmax)
  local rid = arg()
  local total = arg_num()
  local states, locals, subs = {}, {}, {}
  local nforeign = arg_num()
  for _ = 1, nforeign do
    local idx = arg_num()
    states[idx] = arg_num()
  end
  for i = 1, #KEYS do
    local s = load_sub(prefix_of(KEYS[i]), rid)
    if not s then return nil end
    subs[#subs + 1] = s
    for _, l in ipairs(s.lines) do
      states[l.idx] = l.state
      locals[l.idx] = {l, s}
    end
  end
  return {rid = rid, total = total, states = states, locals = locals, subs = subs}
end

local function ok_reply(res)
  local out = {}
  for i, s in ipairs(res.subs) do out[i] = sub_reply(s) end
  return {'OK', out}
end

-- Line indexes from ARGV: a flag (0: none given = every line), count, indexes.
local function read_indexes()
  local given = arg() == '1'
  local n = arg_num()
  local idx = {}
  for i = 1, n do idx[i] = arg_num() end
  if given then return idx end
  return nil
end

-- The reference ledger's _select checks: not empty, every index in range.
local function check_indexes(res, indexes)
  if #indexes == 0 then return {'EMPTY_INDEXES'} end
  for _, i in ipairs(indexes) do
    if i < 0 or i >= res.total then return {'INDEX_RANGE', i} end
  end
  return nil
end

-- The local lines among `indexes` (each once), in line order.
local function local_selection(res, indexes)
  local seen, out = {}, {}
  for _, i in ipairs(indexes) do
    if res.locals[i] and not seen[i] then
      seen[i] = true
      out[#out + 1] = res.locals[i]
    end
  end
  table.sort(out, function(a, b) return a[1].idx < b[1].idx end)
  return out
end

-- Every local line, in line order, optionally only those in given states.
local function local_lines(res, wanted)
  local out = {}
  for _, s in ipairs(res.subs) do
    for _, l in ipairs(s.lines) do
      if wanted == nil or wanted[l.state] then out[#out + 1] = {l, s} end
    end
  end
  table.sort(out, function(a, b) return a[1].idx < b[1].idx end)
  return out
end

-- Saves the changed lines, grouped by sub-reservation, and reschedules them.
local function save_changes(changed)
  local by_sub, order = {}, {}
  for _, pair in ipairs(changed) do
    local s = pair[2]
    if not by_sub[s] then
      by_sub[s] = {}
      order[#order + 1] = s
    end
    local list = by_sub[s]
    list[#list + 1] = pair[1]
  end
  for _, s in ipairs(order) do
    save_lines(s, by_sub[s])
    reschedule(s)
  end
end
