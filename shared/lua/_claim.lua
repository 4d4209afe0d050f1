-- Shared by claim and complete (prepended when the scripts are loaded): lease the next ready
-- job, so that a worker finishing a job can take its next one in the same round trip.

-- Promote due retries, pop the best waiting job and lease it to `token` for `lease_ms`.
-- `worker` ('' for a claimer without liveness) renews its liveness for `liveness_ms`.
-- Returns {1, fields...} with the job's hash, or {0, nextDueMs or -1} when nothing is ready.
local function claim_next(waiting, active, delayed, notify, alive, job_prefix, token, lease_ms, worker,
                          liveness_ms, now)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    local score = redis.call('HGET', job_prefix .. id, 'score')
    if score then
      redis.call('ZADD', waiting, score, id)
      redis.call('HSET', job_prefix .. id, 'state', 'waiting')
    end
  end
  while true do
    local popped = redis.call('ZPOPMIN', waiting)
    if #popped == 0 then
      -- Queue drained: any wake-up token left would only cause an empty claim.
      redis.call('DEL', notify)
      local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
      if #nxt > 0 then return {0, nxt[2]} end
      return {0, '-1'}
    end
    local id = popped[1]
    local key = job_prefix .. id
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'state', 'active', 'token', token, 'processedOn',
        string.format('%d', now), 'progress', 0)
      if worker ~= '' then
        -- The claimer renews its liveness; recover takes the job back as soon as that lapses.
        -- Renewed here too, so a job is never held by a worker recover does not know of.
        redis.call('HSET', key, 'worker', worker)
        redis.call('ZADD', alive, now + tonumber(liveness_ms), worker)
      else
        redis.call('HDEL', key, 'worker')
      end
      redis.call('ZADD', active, now + tonumber(lease_ms), id)
      return {1, redis.call('HGETALL', key)}
    end
  end
end

