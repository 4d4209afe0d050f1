-- Return jobs whose lease expired to the queue, counting the lost attempt; dead-letter
-- those that used their last attempt. Then apply retention to the finished jobs, so that
-- jobs age out on schedule even while no other job finishes.
-- KEYS: active, waiting, failed, notify, completed
-- ARGV: jobPrefix, limit, keepFailedMs, keepFailedCount, keepCompletedMs, keepCompletedCount
-- Returns {requeuedIds, failedIds}.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local requeued, failed = {}, {}
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[1] .. id
  if redis.call('EXISTS', key) == 1 then
    local attempts = redis.call('HINCRBY', key, 'attemptsMade', 1)
    local info = redis.call('HMGET', key, 'attemptsMax', 'score')
    local reason = 'lease expired: the worker stopped or timed out (attempt ' .. attempts .. ')'
    redis.call('HDEL', key, 'token')
    redis.call('HSET', key, 'failedReason', reason)
    if attempts >= tonumber(info[1]) then
      redis.call('HSET', key, 'state', 'failed', 'finishedOn', string.format('%d', now),
        'stacktrace', '')
      redis.call('ZADD', KEYS[3], finished_score(t), id)
      failed[#failed + 1] = id
    else
      redis.call('HSET', key, 'state', 'waiting', 'progress', 0)
      redis.call('ZADD', KEYS[2], info[2], id)
      redis.call('LPUSH', KEYS[4], '1')
      requeued[#requeued + 1] = id
    end
  end
end
apply_retention(KEYS[3], ARGV[1], now, tonumber(ARGV[3]), tonumber(ARGV[4]))
apply_retention(KEYS[5], ARGV[1], now, tonumber(ARGV[5]), tonumber(ARGV[6]))
return {requeued, failed}
