-- Shared by the scripts that finish jobs (prepended when the scripts are loaded).

-- Score of a finished job in its set: TIME in ms, the microseconds as decimals. Jobs finishing
-- within one millisecond keep their order (equal scores would sort by id, and retention by
-- count could then drop a newer job and keep an older one).
local function finished_score(t)
  return string.format('%d.%03d', t[1] * 1000 + math.floor(t[2] / 1000), t[2] % 1000)
end

-- Drop finished jobs older than keepMs, then all but the newest keepCount.
local function apply_retention(set_key, job_prefix, now, keep_ms, keep_count)
  local old = redis.call('ZRANGEBYSCORE', set_key, '-inf', '(' .. (now - keep_ms), 'LIMIT', 0, 500)
  for _, id in ipairs(old) do
    redis.call('DEL', job_prefix .. id)
    redis.call('ZREM', set_key, id)
  end
  local extra = redis.call('ZCARD', set_key) - keep_count
  if extra > 0 then
    for _, id in ipairs(redis.call('ZRANGE', set_key, 0, extra - 1)) do
      redis.call('DEL', job_prefix .. id)
    end
    redis.call('ZREMRANGEBYRANK', set_key, 0, extra - 1)
  end
end

