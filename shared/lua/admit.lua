-- Admit one job atomically: replay, conflict, queue-full, no room for finished jobs, or
-- store-and-enqueue (admit_one in _admit.lua).
-- KEYS: job, waiting, delayed, seq, notify, active, completed, failed, failedPayloads, failedBytes
-- ARGV: jobId, payloadHash, payload, priorityRank, priority, attemptsMax, projectId,
--       queueMax, seqSpan, notifyMax, jobPrefix, keepCompletedMs, completedCap, keepFailedMs,
--       failedCap
-- Returns {code, detail, ...} as admit_one does.
local q = admit_context(2, 8)
return admit_one(q, KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
