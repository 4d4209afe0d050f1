-- Admit several jobs in one atomic step, each exactly as admit would one after the other (so
-- the backlog limit holds exactly, and a jobId twice in one call is a replay or a conflict of
-- the first), in the order given.
-- KEYS: waiting, delayed, seq, notify, active, completed, failed, failedPayloads, failedBytes,
--       then each job's key
-- ARGV: queueMax, seqSpan, notifyMax, jobPrefix, keepCompletedMs, completedCap, keepFailedMs,
--       failedCap, then per job: jobId, payloadHash, payload, priorityRank, priority,
--       attemptsMax, projectId
-- Returns one {code, detail, ...} per job, as admit_one does.
local q = admit_context(1, 1)
local answers = {}
local n = #KEYS - 9
for i = 1, n do
  local a = 8 + (i - 1) * 7
  answers[i] = admit_one(q, KEYS[9 + i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5],
                         ARGV[a + 6], ARGV[a + 7])
end
return answers
