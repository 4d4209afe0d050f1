-- Admit one job atomically: replay, conflict, queue-full or store-and-enqueue.
-- KEYS: job, waiting, delayed, seq, notify
-- ARGV: jobId, payloadHash, payload, priorityRank, priority, attemptsMax, queueMax,
--       projectId, seqSpan, notifyMax
-- Returns {code, detail}: 0 admitted, 1 identical replay (detail = state),
--                         2 conflicting payload (detail = state), 3 full (detail = backlog)
local existing = redis.call('HMGET', KEYS[1], 'hash', 'state')
if existing[1] then
  if existing[1] == ARGV[2] then return {1, existing[2]} end
  return {2, existing[2]}
end
local backlog = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
if backlog >= tonumber(ARGV[7]) then return {3, tostring(backlog)} end
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
local seq = redis.call('INCR', KEYS[4])
local score = string.format('%.0f', tonumber(ARGV[4]) * tonumber(ARGV[9]) + seq)
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'hash', ARGV[2], 'payload', ARGV[3],
  'state', 'waiting', 'priority', ARGV[5], 'score', score, 'projectId', ARGV[8],
  'attemptsMade', 0, 'attemptsMax', ARGV[6], 'progress', 0, 'createdAt', now)
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[10]) - 1)
return {0, 'waiting'}
