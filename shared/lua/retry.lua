-- Put a dead letter back in the queue: fresh attempts, its original priority and place, its
-- failure appended to its history (the last historyMax, reasons clipped), a worker woken.
-- KEYS: job, failed, waiting, delayed, notify, failedPayloads, failedBytes, seq
-- ARGV: jobId, queueMax, notifyMax, historyMax, reasonBytes, seqSpan, rankHigh, rankNormal, rankLow,
--       then the hash fields to answer with
-- Returns {code, detail, values}: 0 queued again (detail = 'waiting', values = the fields as the
--                         retry left them, before any worker claims it), 1 no such job, 2 not failed
--                         (detail = its state), 3 queue full (detail = backlog), 4 its payload
--                         is no longer kept (shed past the failed payloads' budget)
local job = redis.call('HMGET', KEYS[1], 'state', 'attemptsMade', 'failedReason', 'finishedOn', 'score',
  'history', 'priority')
if not job[1] then return {1, ''} end
if job[1] ~= 'failed' then return {2, job[1]} end
if redis.call('HEXISTS', KEYS[1], 'payload') == 0 then return {4, 'failed'} end
local backlog = redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4])
if backlog >= tonumber(ARGV[2]) then return {3, tostring(backlog)} end

local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
-- Out of the failed payloads' byte count: the payload is a waiting job's again.
if redis.call('ZREM', KEYS[6], ARGV[1]) == 1 then
  redis.call('DECRBY', KEYS[7], redis.call('HSTRLEN', KEYS[1], 'payload'))
end

-- The reason's first reasonBytes bytes, never a split UTF-8 character.
local function clipped(text, limit)
  if #text <= limit then return text end
  local cut = limit
  while cut > 0 and string.byte(text, cut + 1) and string.byte(text, cut + 1) >= 128
      and string.byte(text, cut + 1) < 192 do
    cut = cut - 1
  end
  return string.sub(text, 1, cut)
end

local history = {}
if job[6] then
  local ok, decoded = pcall(cjson.decode, job[6])
  if ok and type(decoded) == 'table' then history = decoded end
end
history[#history + 1] = {attemptsMade = tonumber(job[2]) or 0,
  failedReason = clipped(job[3] or '', tonumber(ARGV[5])), finishedOn = job[4] or '',
  retriedOn = string.format('%d', now)}
while #history > tonumber(ARGV[4]) do table.remove(history, 1) end

local score = job[5]
if not score then
  local ranks = {high = ARGV[7], normal = ARGV[8], low = ARGV[9]}
  local rank = tonumber(ranks[job[7] or 'normal'] or ARGV[8])
  score = string.format('%.0f', rank * tonumber(ARGV[6]) + redis.call('INCR', KEYS[8]))
end
redis.call('HDEL', KEYS[1], 'failedReason', 'stacktrace', 'finishedOn', 'processedOn', 'token', 'worker',
  'result')
redis.call('HSET', KEYS[1], 'state', 'waiting', 'attemptsMade', 0, 'progress', 0, 'score', score,
  'history', cjson.encode(history))
redis.call('ZADD', KEYS[3], score, ARGV[1])
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[3]) - 1)
local fields = {}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
return {0, 'waiting', redis.call('HMGET', KEYS[1], unpack(fields))}
