-- Admit one job atomically: replay, conflict, queue-full, no room for finished jobs, or
-- store-and-enqueue.
-- KEYS: job, waiting, delayed, seq, notify, active, completed, failed, failedPayloads, failedBytes
-- ARGV: jobId, payloadHash, payload, priorityRank, priority, attemptsMax, queueMax,
--       projectId, seqSpan, notifyMax, jobPrefix, keepCompletedMs, completedCap, keepFailedMs,
--       failedCap
-- Returns {code, detail}: 0 admitted, 1 identical replay (detail = state),
--                         2 conflicting payload (detail = state), 3 full (detail = backlog),
--                         4 finished jobs at their cap (detail = ms until one ages out; then
--                           which set, and its cap)
local existing = redis.call('HMGET', KEYS[1], 'hash', 'state')
if existing[1] then
  if existing[1] == ARGV[2] then return {1, existing[2]} end
  return {2, existing[2]}
end
local backlog = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
if backlog >= tonumber(ARGV[7]) then return {3, tostring(backlog)} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
-- Every job admitted and not finished yet will need a finished record: the caps must leave
-- room for all of them, or a record still within its age would have to go.
local unfinished = backlog + redis.call('ZCARD', KEYS[6]) + 1
local sets = {{KEYS[7], tonumber(ARGV[12]), tonumber(ARGV[13]), '', '', 'completed'},
              {KEYS[8], tonumber(ARGV[14]), tonumber(ARGV[15]), KEYS[9], KEYS[10], 'failed'}}
for _, s in ipairs(sets) do
  apply_retention(s[1], ARGV[11], now, s[2], s[3], s[4], s[5])
  if redis.call('ZCARD', s[1]) + unfinished > s[3] then
    return {4, tostring(ages_out_in(s[1], now, s[2])), s[6], tostring(s[3])}
  end
end
local seq = redis.call('INCR', KEYS[4])
local score = string.format('%.0f', tonumber(ARGV[4]) * tonumber(ARGV[9]) + seq)
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'hash', ARGV[2], 'payload', ARGV[3],
  'state', 'waiting', 'priority', ARGV[5], 'score', score, 'projectId', ARGV[8],
  'attemptsMade', 0, 'attemptsMax', ARGV[6], 'progress', 0, 'createdAt', string.format('%d', now))
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[10]) - 1)
return {0, 'waiting'}
