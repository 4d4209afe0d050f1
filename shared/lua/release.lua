-- Give an owned job back to the queue without counting an attempt (graceful shutdown).
-- KEYS: job, active, waiting, notify
-- ARGV: jobId, token
-- Returns 1, or 0 when the lease was already lost.
local state = redis.call('HMGET', KEYS[1], 'state', 'token', 'score')
if state[1] ~= 'active' or state[2] ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], 'token', 'worker')
redis.call('HSET', KEYS[1], 'state', 'waiting', 'progress', 0)
redis.call('ZADD', KEYS[3], state[3], ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
return 1
