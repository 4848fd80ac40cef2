-- Reservations in order, each atomic (the whole call is). One call for many reservations: a
-- bulk chunk's hundreds cost Redis one command, and redis-py one to pack and one reply to read.
--
-- KEYS[1] the ledger's ready mark: paid reservations are refused ('not_ready') without it.
-- ARGV[1] the number of reservations, ARGV[2] this call's attempt id; then, per reservation,
-- its key count, its argument count and its arguments. KEYS holds every reservation's keys one
-- after the other, from KEYS[2].
--
-- One reservation's keys: 1 request marker; 2 .. 1+nb budget counters; 2+nb contacts (if any).
-- Its arguments: 1 marker JSON, 2 marker TTL ms, 3 cost cents, 4 nb, 5 has contact ("1"/"0"),
--   6 contact member, 7 contact score (now ms), 8 max contacts, 9 window lower bound
--   ("(<ms>": exclusive), 10 trim bound ("(<ms>"), 11 contacts key TTL ms,
--   then per budget: cap cents, allowed cents.
-- Bounds are formatted by the caller: Lua prints large numbers as 1.7e+12.
--
-- A replay that charges what this call would hands the marker to this call (its "attempt"
-- field), so an earlier attempt whose row then fails to be written does not release what this
-- one's row records (``release(attempt=…)``); a replay that charges otherwise leaves it with
-- its owner. Without the ready mark a paid replay is refused too: a rebuild is summing the rows.
local ready = redis.call('EXISTS', KEYS[1]) == 1
local attempt = ARGV[2]

-- One reservation, its keys at KEYS[k + i] and its arguments at ARGV[a + i].
local function reserve(k, a)
  local marker_key = KEYS[k + 1]
  local stored = redis.call('GET', marker_key)
  if stored then
    local record = cjson.decode(stored)
    if not ready and tonumber(record['cost_cents']) > 0 then
      return {'not_ready'}  -- a rebuild is summing: a charge replayed now could be missed
    end
    local wanted = cjson.decode(ARGV[a + 1])
    if record['attempt'] ~= attempt and record['cost_cents'] == wanted['cost_cents']
        and cjson.encode(record['budgets']) == cjson.encode(wanted['budgets'])
        and cjson.encode(record['contact']) == cjson.encode(wanted['contact']) then
      -- this call will record the same charge and contact: it holds the marker from now on
      record['attempt'] = attempt
      redis.call('SET', marker_key, cjson.encode(record), 'KEEPTTL')
      return {'replay', stored, 1}
    end
    return {'replay', stored, record['attempt'] == attempt and 1 or 0}
  end
  local cost = tonumber(ARGV[a + 3])
  if cost > 0 and not ready then
    return {'not_ready'}
  end
  local nb = tonumber(ARGV[a + 4])
  local contacts_key = nil
  if ARGV[a + 5] == '1' then
    contacts_key = KEYS[k + 2 + nb]
    -- lazy clean-up of contacts no window looks at any more (harmless if refused below)
    redis.call('ZREMRANGEBYSCORE', contacts_key, '-inf', ARGV[a + 10])
    local n = redis.call('ZCOUNT', contacts_key, ARGV[a + 9], '+inf')
    if n >= tonumber(ARGV[a + 8]) then
      return {'contact_cap', 0, n, tonumber(ARGV[a + 8])}
    end
  end
  if cost > 0 then
    -- as the decision core: the budget with the least room decides, caps before pacing
    local spent = {}
    local cap_i, cap_room, pace_i, pace_room = 0, nil, 0, nil
    for i = 1, nb do
      spent[i] = tonumber(redis.call('GET', KEYS[k + 1 + i]) or '0')
      local room = tonumber(ARGV[a + 10 + 2 * i]) - spent[i]
      if cap_room == nil or room < cap_room then cap_i, cap_room = i, room end
      room = tonumber(ARGV[a + 11 + 2 * i]) - spent[i]
      if pace_room == nil or room < pace_room then pace_i, pace_room = i, room end
    end
    if cap_room ~= nil and cost > cap_room then
      return {'budget_exhausted', cap_i, spent[cap_i], tonumber(ARGV[a + 10 + 2 * cap_i])}
    end
    if pace_room ~= nil and cost > pace_room then
      return {'pacing', pace_i, spent[pace_i], tonumber(ARGV[a + 11 + 2 * pace_i])}
    end
    for i = 1, nb do
      redis.call('INCRBY', KEYS[k + 1 + i], ARGV[a + 3])
    end
  end
  if contacts_key then
    redis.call('ZADD', contacts_key, ARGV[a + 7], ARGV[a + 6])
    local ttl = tonumber(ARGV[a + 11])
    if redis.call('PTTL', contacts_key) < ttl then
      redis.call('PEXPIRE', contacts_key, ttl)
    end
  end
  redis.call('SET', marker_key, ARGV[a + 1], 'PX', ARGV[a + 2])
  return {'ok'}
end

local out = {}
local k, a = 1, 2
for r = 1, tonumber(ARGV[1]) do
  local nk, na = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  out[r] = reserve(k, a + 2)
  k, a = k + nk, a + 2 + na
end
return out
