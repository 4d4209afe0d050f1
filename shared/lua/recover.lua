-- Take jobs back from workers that stopped, counting the lost attempt; dead-letter those that
-- used their last attempt. A job is taken back when its lease expired, or at once when the
-- worker that claimed it with liveness let that lapse (killed, or cut off from Redis).
-- Then apply retention to the finished jobs, so that jobs age out on schedule even while no
-- other job finishes.
-- KEYS: active, waiting, failed, notify, completed, alive, checked, failedPayloads, failedBytes
-- ARGV: jobPrefix, limit, keepFailedMs, keepFailedCount, keepCompletedMs, keepCompletedCount,
--       livenessMs, failedPayloadBudget
-- Returns {requeuedIds, failedIds}.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local requeued, failed = {}, {}

local function take_back(id, why)
  local key = ARGV[1] .. id
  if redis.call('EXISTS', key) == 0 then return end
  local attempts = redis.call('HINCRBY', key, 'attemptsMade', 1)
  local info = redis.call('HMGET', key, 'attemptsMax', 'score')
  redis.call('HDEL', key, 'token', 'worker')
  redis.call('HSET', key, 'failedReason', why .. ' (attempt ' .. attempts .. ')')
  if attempts >= tonumber(info[1]) then
    redis.call('HSET', key, 'state', 'failed', 'finishedOn', string.format('%d', now),
      'stacktrace', '')
    local score = finished_score(t)
    redis.call('ZADD', KEYS[3], score, id)
    keep_failed_payload(KEYS[8], KEYS[9], ARGV[1], id, score, tonumber(ARGV[8]))
    failed[#failed + 1] = id
  else
    redis.call('HSET', key, 'state', 'waiting', 'progress', 0)
    redis.call('ZADD', KEYS[2], info[2], id)
    redis.call('LPUSH', KEYS[4], '1')
    requeued[#requeued + 1] = id
  end
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  take_back(id, 'lease expired: the worker stopped or timed out')
end

local liveness_ms = tonumber(ARGV[7])
local last = redis.call('GET', KEYS[7])
redis.call('SET', KEYS[7], string.format('%d', now))
local dead = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', '(' .. now, 'LIMIT', 0, 100)
if #dead > 0 then
  if not last or now - tonumber(last) > liveness_ms then
    -- No check ran for longer than a liveness period: Redis was out of everyone's reach (a
    -- restart, a failover), or no worker was running. A renewal missed then says nothing
    -- about a worker, so each gets one more period to renew before it counts as stopped.
    for _, worker in ipairs(dead) do
      redis.call('ZADD', KEYS[6], now + liveness_ms, worker)
    end
  else
    local stopped = {}
    for _, worker in ipairs(dead) do stopped[worker] = true end
    -- The active set is small (the jobs rendering right now), and this runs only when a
    -- worker stopped.
    for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
      local worker = redis.call('HGET', ARGV[1] .. id, 'worker')
      if worker and stopped[worker] then
        redis.call('ZREM', KEYS[1], id)
        take_back(id, 'worker ' .. worker .. ' stopped')
      end
    end
    redis.call('ZREM', KEYS[6], unpack(dead))
  end
end

apply_retention(KEYS[3], ARGV[1], now, tonumber(ARGV[3]), tonumber(ARGV[4]), KEYS[8], KEYS[9])
apply_retention(KEYS[5], ARGV[1], now, tonumber(ARGV[5]), tonumber(ARGV[6]))
return {requeued, failed}
