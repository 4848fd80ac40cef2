-- Undo one reservation, only if its marker is still the one the caller read (compare and
-- delete): refund each budget, forget the contact, drop the marker.
--
-- KEYS[1] request marker; KEYS[2 .. 1+nb] budget counters; KEYS[2+nb] contacts (if any).
-- ARGV: 1 the marker as read, 2 nb, 3 contact member ("" for none), then the cents to refund
-- per budget.
-- Returns 1 released, 0 no marker (nothing to undo), -1 the marker changed (left alone).
local stored = redis.call('GET', KEYS[1])
if not stored then
  return 0
end
if stored ~= ARGV[1] then
  return -1
end
local nb = tonumber(ARGV[2])
for i = 1, nb do
  redis.call('DECRBY', KEYS[1 + i], ARGV[3 + i])
end
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[2 + nb], ARGV[3])
end
redis.call('DEL', KEYS[1])
return 1
