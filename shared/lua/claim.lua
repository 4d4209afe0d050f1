-- Claim the next job: promote due retries, pop the best waiting job, lease it.
-- KEYS: waiting, active, delayed, notify, alive
-- ARGV: jobPrefix, token, leaseMs, workerId ('' for a claimer without liveness), livenessMs
-- Returns {1, fields...} with the job's hash, or {0, nextDueMs or -1} when nothing is ready.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  local score = redis.call('HGET', ARGV[1] .. id, 'score')
  if score then
    redis.call('ZADD', KEYS[1], score, id)
    redis.call('HSET', ARGV[1] .. id, 'state', 'waiting')
  end
end
while true do
  local popped = redis.call('ZPOPMIN', KEYS[1])
  if #popped == 0 then
    -- Queue drained: any wake-up token left would only cause an empty claim.
    redis.call('DEL', KEYS[4])
    local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    if #nxt > 0 then return {0, nxt[2]} end
    return {0, '-1'}
  end
  local id = popped[1]
  local key = ARGV[1] .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'state', 'active', 'token', ARGV[2], 'processedOn',
      string.format('%d', now), 'progress', 0)
    if ARGV[4] ~= '' then
      -- The claimer renews its liveness; recover takes the job back as soon as that lapses.
      -- Renewed here too, so a job is never held by a worker recover does not know of.
      redis.call('HSET', key, 'worker', ARGV[4])
      redis.call('ZADD', KEYS[5], now + tonumber(ARGV[5]), ARGV[4])
    else
      redis.call('HDEL', key, 'worker')
    end
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), id)
    return {1, redis.call('HGETALL', key)}
  end
end
