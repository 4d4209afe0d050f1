-- Mark an owned job completed and apply retention to the completed set. The payload goes (its
-- hash stays: a replay still answers with this job, a changed payload still conflicts). With a
-- next token, the next ready job is claimed in the same step (one round trip per job for a
-- busy worker), exactly as claim does.
-- KEYS: job, active, completed, waiting, delayed, notify, alive
-- ARGV: jobId, token, jobPrefix, keepMs, keepCount, result,
--       nextToken ('' to claim nothing), leaseMs, workerId, livenessMs
-- Returns {1, claim reply} ({1, {0, '-1'}} when nothing was to be claimed), or {0} when the
-- lease was lost (then nothing is claimed).
local state = redis.call('HMGET', KEYS[1], 'state', 'token')
if state[1] ~= 'active' or state[2] ~= ARGV[2] then return {0} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attemptsMade', 1)
redis.call('HDEL', KEYS[1], 'token', 'worker', 'failedReason', 'stacktrace', 'payload', 'score')
redis.call('HSET', KEYS[1], 'state', 'completed', 'progress', 100,
  'finishedOn', string.format('%d', now), 'result', ARGV[6])
redis.call('ZADD', KEYS[3], finished_score(t), ARGV[1])
apply_retention(KEYS[3], ARGV[3], now, tonumber(ARGV[4]), tonumber(ARGV[5]))
if ARGV[7] == '' then return {1, {0, '-1'}} end
return {1, claim_next(KEYS[4], KEYS[2], KEYS[5], KEYS[6], KEYS[7], ARGV[3], ARGV[7], ARGV[8], ARGV[9],
                      ARGV[10], now)}
