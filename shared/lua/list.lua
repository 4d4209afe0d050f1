-- One page of the jobs in one state, with the count of every state, read at one instant.
-- The cursor is the (score, id) of the last job of the previous page: the page starts after it
-- in the set's order (scores, ties by id), so jobs added or removed meanwhile shift nothing.
-- KEYS: the state's set, waiting, active, delayed, completed, failed
-- ARGV: jobPrefix, newestFirst ('1' or '0'), limit, cursorScore ('' for the first page),
--       cursorId, then the hash fields to read of each job
-- Returns {more (1/0), {counts in KEYS order 2..6}, {id, score, {field values}}...}. The first
-- field must be `id`: a set member without its hash (claim skips those too) is left out.
local prefix, desc, limit = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local cscore, cid = ARGV[4], ARGV[5]
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end

local page, more, offset, batch = {}, false, 0, limit + 1
local from = cscore == '' and (desc and '+inf' or '-inf') or cscore
local to = desc and '-inf' or '+inf'
local command = desc and 'ZREVRANGEBYSCORE' or 'ZRANGEBYSCORE'
while true do
  local got = redis.call(command, KEYS[1], from, to, 'WITHSCORES', 'LIMIT', offset, batch)
  for i = 1, #got, 2 do
    local id, score = got[i], got[i + 1]
    local after = true
    if cscore ~= '' and tonumber(score) == tonumber(cscore) then
      if desc then after = id < cid else after = id > cid end
    end
    if after then
      if #page >= limit then more = true break end
      page[#page + 1] = {id, score}
    end
  end
  if more or #got < batch * 2 then break end
  offset = offset + batch
end

local counts = {}
for i = 2, 6 do counts[#counts + 1] = redis.call('ZCARD', KEYS[i]) end
local out = {more and 1 or 0, counts}
for _, entry in ipairs(page) do
  local values = redis.call('HMGET', prefix .. entry[1], unpack(fields))
  if values[1] then out[#out + 1] = {entry[1], entry[2], values} end
end
return out
