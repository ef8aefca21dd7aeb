"""No-op job throughput with full arq semantics (claim with the in-progress
key, retry counter, result written, queue entry removed): doculearn's worker
beside arq 0.28's own worker, on the same machine and Redis, in one run.

    python tests/interop/bench_throughput.py [--jobs 20000] [--max-jobs 100]

Both workers get the same pre-filled queue of `noop` jobs; throughput is
jobs / (last finish time - first start time), read from the results
themselves, so start-up time counts for neither. Prints figures; asserts
nothing about speed."""

import argparse
import asyncio
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from conftest import BIN, ROOT, Daemon  # noqa: E402

from arq.connections import RedisSettings, create_pool  # noqa: E402
from arq.jobs import deserialize_result  # noqa: E402
from arq.worker import Worker, func  # noqa: E402


async def fill(queue, n):
    redis = await create_pool(RedisSettings(), default_queue_name=queue)
    prefix = uuid.uuid4().hex[:8]
    ids = [f"bench:{prefix}:{i}" for i in range(n)]
    for start in range(0, n, 1000):
        await asyncio.gather(*(redis.enqueue_job("noop", _job_id=j) for j in ids[start:start + 1000]))
    await redis.aclose()
    return ids


async def wait_done(queue, n, timeout):
    redis = await create_pool(RedisSettings(), default_queue_name=queue)
    deadline = time.time() + timeout
    while await redis.zcard(queue) > 0:
        if time.time() > deadline:
            raise SystemExit(f"{queue}: not done after {timeout}s ({await redis.zcard(queue)} left)")
        await asyncio.sleep(0.05)
    await redis.aclose()


async def measure(ids):
    redis = await create_pool(RedisSettings())
    starts, finishes, ok = [], [], 0
    for start in range(0, len(ids), 2000):
        pipe = redis.pipeline(transaction=False)
        for j in ids[start:start + 2000]:
            pipe.get(f"arq:result:{j}")
        for raw in await pipe.execute():
            r = deserialize_result(raw)
            ok += bool(r.success)
            starts.append(r.start_time.timestamp())
            finishes.append(r.finish_time.timestamp())
    await redis.aclose()
    span = max(finishes) - min(starts)
    return ok, span


async def noop(ctx):
    return None


async def run_arq(n, max_jobs):
    queue = f"bench:{uuid.uuid4().hex[:8]}:arq"
    ids = await fill(queue, n)
    worker = Worker(
        functions=[func(noop, name="noop")],
        redis_settings=RedisSettings(),
        queue_name=queue,
        max_jobs=max_jobs,
        burst=True,
        handle_signals=False,
        keep_result=3600,
    )
    await worker.main()
    await worker.close()
    return await measure(ids)


def run_ours(n, max_jobs):
    d = Daemon("bench-throughput", env={"DOCULEARN_QUEUE__ENABLE_NOOP": "true", "DOCULEARN_QUEUE__MAX_JOBS": str(max_jobs)}, role="api")
    try:
        ids = asyncio.run(fill(d.queue, n))
        d.stop()
        d.role = "worker"
        d.start()
        asyncio.run(wait_done(d.queue, n, 600))
        return asyncio.run(measure(ids))
    finally:
        d.drop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--max-jobs", type=int, default=100)
    args = ap.parse_args()
    print(f"binary: {BIN}")
    print(f"{args.jobs} noop jobs, max_jobs={args.max_jobs}, Redis 127.0.0.1:6379, {os.cpu_count()} cores")
    ok_arq, span_arq = asyncio.run(run_arq(args.jobs, args.max_jobs))
    ok_ours, span_ours = run_ours(args.jobs, args.max_jobs)
    rate_arq = args.jobs / span_arq
    rate_ours = args.jobs / span_ours
    print(f"arq 0.28 worker : {ok_arq:6d} ok in {span_arq:7.2f} s = {rate_arq:9.0f} jobs/s")
    print(f"doculearn worker: {ok_ours:6d} ok in {span_ours:7.2f} s = {rate_ours:9.0f} jobs/s")
    print(f"ratio           : {rate_ours / rate_arq:.1f}x")


if __name__ == "__main__":
    main()
