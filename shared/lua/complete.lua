-- Mark an owned job completed and apply retention to the completed set.
-- KEYS: job, active, completed
-- ARGV: jobId, token, jobPrefix, keepMs, keepCount, result
-- Returns 1, or 0 when the lease was lost.
local state = redis.call('HMGET', KEYS[1], 'state', 'token')
if state[1] ~= 'active' or state[2] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attemptsMade', 1)
redis.call('HDEL', KEYS[1], 'token', 'failedReason', 'stacktrace')
redis.call('HSET', KEYS[1], 'state', 'completed', 'progress', 100,
  'finishedOn', string.format('%d', now), 'result', ARGV[6])
redis.call('ZADD', KEYS[3], now, ARGV[1])
-- Retention: drop by age, then keep the newest keepCount.
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - tonumber(ARGV[4])), 'LIMIT', 0, 500)
for _, id in ipairs(old) do
  redis.call('DEL', ARGV[3] .. id)
  redis.call('ZREM', KEYS[3], id)
end
local extra = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
if extra > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, extra - 1)) do
    redis.call('DEL', ARGV[3] .. id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, extra - 1)
end
return 1
