-- Record a failed attempt of an owned job: back off for a retry, or dead-letter it (keeping
-- its payload within the failed payloads' budget).
-- KEYS: job, active, delayed, failed, failedPayloads, failedBytes
-- ARGV: jobId, token, jobPrefix, reason, stacktrace, retryable (1/0), delayMs, keepMs, keepCount,
--       payloadBudget
-- Returns {state, attemptsMade}, or {'lost', 0} when the lease was lost.
local state = redis.call('HMGET', KEYS[1], 'state', 'token', 'attemptsMax')
if state[1] ~= 'active' or state[2] ~= ARGV[2] then return {'lost', 0} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
local attempts = redis.call('HINCRBY', KEYS[1], 'attemptsMade', 1)
redis.call('HDEL', KEYS[1], 'token', 'worker')
redis.call('HSET', KEYS[1], 'failedReason', ARGV[4], 'stacktrace', ARGV[5])
if ARGV[6] == '1' and attempts < tonumber(state[3]) then
  redis.call('HSET', KEYS[1], 'state', 'delayed')
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[7]), ARGV[1])
  return {'delayed', attempts}
end
redis.call('HSET', KEYS[1], 'state', 'failed', 'finishedOn', string.format('%d', now))
local score = finished_score(t)
redis.call('ZADD', KEYS[4], score, ARGV[1])
keep_failed_payload(KEYS[5], KEYS[6], ARGV[3], ARGV[1], score, tonumber(ARGV[10]))
apply_retention(KEYS[4], ARGV[3], now, tonumber(ARGV[8]), tonumber(ARGV[9]), KEYS[5], KEYS[6])
return {'failed', attempts}
