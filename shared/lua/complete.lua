-- Mark an owned job completed and apply retention to the completed set. The payload goes (its
-- hash stays: a replay still answers with this job, a changed payload still conflicts).
-- KEYS: job, active, completed
-- ARGV: jobId, token, jobPrefix, keepMs, keepCount, result
-- Returns 1, or 0 when the lease was lost.
local state = redis.call('HMGET', KEYS[1], 'state', 'token')
if state[1] ~= 'active' or state[2] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attemptsMade', 1)
redis.call('HDEL', KEYS[1], 'token', 'worker', 'failedReason', 'stacktrace', 'payload', 'score')
redis.call('HSET', KEYS[1], 'state', 'completed', 'progress', 100,
  'finishedOn', string.format('%d', now), 'result', ARGV[6])
redis.call('ZADD', KEYS[3], finished_score(t), ARGV[1])
apply_retention(KEYS[3], ARGV[3], now, tonumber(ARGV[4]), tonumber(ARGV[5]))
return 1
