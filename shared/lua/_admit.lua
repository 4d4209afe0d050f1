-- Shared by admit and admit_many (prepended when the scripts are loaded, after _retention.lua).

-- Admit one job: replay, conflict, queue-full, no room for finished jobs, or store-and-enqueue.
-- q: the queue's keys and limits (waiting, delayed, seq, notify, active, completed, failed,
-- failedPayloads, failedBytes, queueMax, seqSpan, notifyMax, jobPrefix, keepCompletedMs,
-- completedCap, keepFailedMs, failedCap, now, and `retained`: set once retention ran at `now`,
-- after which it has nothing more to drop in the same script).
-- Returns {code, detail}: 0 admitted, 1 identical replay (detail = state),
--                         2 conflicting payload (detail = state), 3 full (detail = backlog),
--                         4 finished jobs at their cap (detail = ms until one ages out; then
--                           which set, and its cap)
local function admit_one(q, key, id, hash, payload, rank, priority, attempts_max, project_id)
  local existing = redis.call('HMGET', key, 'hash', 'state')
  if existing[1] then
    if existing[1] == hash then return {1, existing[2]} end
    return {2, existing[2]}
  end
  local backlog = redis.call('ZCARD', q.waiting) + redis.call('ZCARD', q.delayed)
  if backlog >= q.queue_max then return {3, tostring(backlog)} end
  -- Every job admitted and not finished yet will need a finished record: the caps must leave
  -- room for all of them, or a record still within its age would have to go.
  local unfinished = backlog + redis.call('ZCARD', q.active) + 1
  local sets = {{q.completed, q.keep_completed_ms, q.completed_cap, '', '', 'completed'},
                {q.failed, q.keep_failed_ms, q.failed_cap, q.failed_payloads, q.failed_bytes, 'failed'}}
  for _, s in ipairs(sets) do
    if not q.retained then apply_retention(s[1], q.job_prefix, q.now, s[2], s[3], s[4], s[5]) end
    if redis.call('ZCARD', s[1]) + unfinished > s[3] then
      return {4, tostring(ages_out_in(s[1], q.now, s[2])), s[6], tostring(s[3])}
    end
  end
  q.retained = true
  local seq = redis.call('INCR', q.seq)
  local score = string.format('%.0f', tonumber(rank) * q.seq_span + seq)
  redis.call('HSET', key, 'id', id, 'hash', hash, 'payload', payload,
    'state', 'waiting', 'priority', priority, 'score', score, 'projectId', project_id,
    'attemptsMade', 0, 'attemptsMax', attempts_max, 'progress', 0, 'createdAt', string.format('%d', q.now))
  redis.call('ZADD', q.waiting, score, id)
  redis.call('LPUSH', q.notify, '1')
  redis.call('LTRIM', q.notify, 0, q.notify_max - 1)
  return {0, 'waiting'}
end

-- The queue's keys (KEYS[first..first+8]) and limits (ARGV[first..first+8]) as admit_one reads them.
local function admit_context(first_key, first_arg)
  local t = redis.call('TIME')
  local k, a = first_key, first_arg
  return {waiting = KEYS[k], delayed = KEYS[k + 1], seq = KEYS[k + 2], notify = KEYS[k + 3],
          active = KEYS[k + 4], completed = KEYS[k + 5], failed = KEYS[k + 6],
          failed_payloads = KEYS[k + 7], failed_bytes = KEYS[k + 8],
          queue_max = tonumber(ARGV[a]), seq_span = tonumber(ARGV[a + 1]), notify_max = tonumber(ARGV[a + 2]),
          job_prefix = ARGV[a + 3], keep_completed_ms = tonumber(ARGV[a + 4]),
          completed_cap = tonumber(ARGV[a + 5]), keep_failed_ms = tonumber(ARGV[a + 6]),
          failed_cap = tonumber(ARGV[a + 7]), now = t[1] * 1000 + math.floor(t[2] / 1000), retained = false}
end

