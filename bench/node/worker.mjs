// The queue bench's BullMQ worker on Node: a Worker with a no-op processor, concurrency
// BENCH_CONCURRENCY, on BENCH_QUEUE at REDIS_URL, the same completed cap as the Python sides
// (BENCH_KEEP_COMPLETED_COUNT, BENCH_KEEP_COMPLETED_SECONDS); it stops on SIGTERM.
import { Worker } from "bullmq";

const url = new URL(process.env.REDIS_URL);
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  password: url.password ? decodeURIComponent(url.password) : undefined,
  db: Number(url.pathname.slice(1) || 0),
  maxRetriesPerRequest: null,
};
const worker = new Worker(process.env.BENCH_QUEUE, async () => {}, {
  connection,
  concurrency: Number(process.env.BENCH_CONCURRENCY || 8),
  removeOnComplete: {
    count: Number(process.env.BENCH_KEEP_COMPLETED_COUNT),
    age: Number(process.env.BENCH_KEEP_COMPLETED_SECONDS),
  },
});
worker.on("error", (error) => console.error(error));
process.on("SIGTERM", async () => {
  await worker.close();
  process.exit(0);
});
