-- Renew a lease (and optionally record progress) if the caller still owns the job.
-- KEYS: job, active
-- ARGV: jobId, token, leaseMs, progress ('' to leave unchanged)
-- Returns 1 when renewed, 0 when the lease was lost.
local state = redis.call('HMGET', KEYS[1], 'state', 'token')
if state[1] ~= 'active' or state[2] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[3]), ARGV[1])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[4]) end
return 1
