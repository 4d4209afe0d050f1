-- Claim the next job: promote due retries, pop the best waiting job, lease it.
-- KEYS: waiting, active, delayed, notify, alive
-- ARGV: jobPrefix, token, leaseMs, workerId ('' for a claimer without liveness), livenessMs
-- Returns {1, fields...} with the job's hash, or {0, nextDueMs or -1} when nothing is ready.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return claim_next(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], now)
