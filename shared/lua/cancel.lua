-- Cancel a job that has not started: out of waiting or delayed, dead-lettered with the reason
-- given (its payload kept within the failed payloads' budget, so it can be retried), then
-- retention applied to the failed set. A running job is not touched.
-- KEYS: job, waiting, delayed, failed, failedPayloads, failedBytes
-- ARGV: jobId, jobPrefix, reason, keepFailedMs, failedCap, payloadBudget, then the hash fields
--       to answer with
-- Returns {code, detail, values}: 0 cancelled (detail = 'failed', values = the fields as the
--                         cancel left them), 1 no such job, 2 neither waiting nor delayed
--                         (detail = its state)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {1, ''} end
if state == 'waiting' then
  redis.call('ZREM', KEYS[2], ARGV[1])
elseif state == 'delayed' then
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  return {2, state}
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HDEL', KEYS[1], 'token', 'worker')
redis.call('HSET', KEYS[1], 'state', 'failed', 'failedReason', ARGV[3], 'stacktrace', '', 'progress', 0,
  'finishedOn', string.format('%d', now))
local score = finished_score(t)
redis.call('ZADD', KEYS[4], score, ARGV[1])
keep_failed_payload(KEYS[5], KEYS[6], ARGV[2], ARGV[1], score, tonumber(ARGV[6]))
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local values = redis.call('HMGET', KEYS[1], unpack(fields))
apply_retention(KEYS[4], ARGV[2], now, tonumber(ARGV[4]), tonumber(ARGV[5]), KEYS[5], KEYS[6])
return {0, 'failed', values}
