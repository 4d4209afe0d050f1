-- Renew a worker's liveness: it counts as alive until now + livenessMs (Redis's clock, the
-- one recover compares with).
-- KEYS: alive
-- ARGV: workerId, livenessMs
-- Returns 1 when the worker was not listed (first renewal, or recover had given it up), else 0.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
