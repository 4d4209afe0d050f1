-- Shared by the scripts that admit and finish jobs (prepended when the scripts are loaded).

-- Score of a finished job in its set: TIME in ms, the microseconds as decimals. Jobs finishing
-- within one millisecond keep their order (equal scores would sort by id, and retention by
-- count could then drop a newer job and keep an older one).
local function finished_score(t)
  return string.format('%d.%03d', t[1] * 1000 + math.floor(t[2] / 1000), t[2] % 1000)
end

-- A failed job's payload leaves the byte count of failed payloads (payloads_key: '' for none).
local function release_payload(payloads_key, bytes_key, key, id)
  if payloads_key ~= '' and redis.call('ZREM', payloads_key, id) == 1 then
    redis.call('DECRBY', bytes_key, redis.call('HSTRLEN', key, 'payload'))
  end
end

-- A job just dead-lettered keeps its payload (for a retry) within the budget of failed
-- payloads; past it the oldest failed jobs shed theirs, their state and reason still readable.
local function keep_failed_payload(payloads_key, bytes_key, job_prefix, id, score, budget)
  local size = redis.call('HSTRLEN', job_prefix .. id, 'payload')
  if size == 0 then return end
  redis.call('ZADD', payloads_key, score, id)
  local total = redis.call('INCRBY', bytes_key, size)
  while total > budget do
    local oldest = redis.call('ZPOPMIN', payloads_key)
    if #oldest == 0 then
      redis.call('SET', bytes_key, 0)
      return
    end
    local key = job_prefix .. oldest[1]
    total = redis.call('DECRBY', bytes_key, redis.call('HSTRLEN', key, 'payload'))
    redis.call('HDEL', key, 'payload')
  end
end

-- Drop finished jobs older than keepMs, then all but the newest keepCount (a safety net:
-- admission keeps the count below the cap while the caps stay as they are).
local function apply_retention(set_key, job_prefix, now, keep_ms, keep_count, payloads_key, bytes_key)
  payloads_key = payloads_key or ''
  local old = redis.call('ZRANGEBYSCORE', set_key, '-inf', '(' .. (now - keep_ms), 'LIMIT', 0, 500)
  for _, id in ipairs(old) do
    release_payload(payloads_key, bytes_key, job_prefix .. id, id)
    redis.call('DEL', job_prefix .. id)
    redis.call('ZREM', set_key, id)
  end
  local extra = redis.call('ZCARD', set_key) - keep_count
  if extra > 0 then
    for _, id in ipairs(redis.call('ZRANGE', set_key, 0, extra - 1)) do
      release_payload(payloads_key, bytes_key, job_prefix .. id, id)
      redis.call('DEL', job_prefix .. id)
    end
    redis.call('ZREMRANGEBYRANK', set_key, 0, extra - 1)
  end
end

-- Milliseconds until the oldest job of a finished set ages out (a slot frees then).
local function ages_out_in(set_key, now, keep_ms)
  local oldest = redis.call('ZRANGE', set_key, 0, 0, 'WITHSCORES')
  if #oldest == 0 then return 0 end
  return math.max(0, math.floor(tonumber(oldest[2]) + keep_ms - now))
end

