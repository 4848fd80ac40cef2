-- The ledger's reads for one or many decisions, in one script call instead of a command per
-- key: a bulk call reads thousands.
--
-- KEYS[1 .. nc] contact sets, then budget counters.
-- ARGV: 1 nc, then per contact set the window's lower bound ("(<ms>": exclusive).
-- Returns the contacts in each window, then each counter (false for none).
local nc = tonumber(ARGV[1])
local out = {}
for i = 1, nc do
  out[i] = redis.call('ZCOUNT', KEYS[i], ARGV[1 + i], '+inf')
end
for i = nc + 1, #KEYS do
  out[i] = redis.call('GET', KEYS[i]) or false
end
return out
