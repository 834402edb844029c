"""The seed's architecture replayed with the ``bullmq`` Python package (run it in its own venv).

    .venv-bench/bin/python benchmarks/bullmq_replica.py enqueue --redis URL --database URL --tasks N
    .venv-bench/bin/python benchmarks/bullmq_replica.py work --redis URL --database URL --concurrency 8

A no-op BullMQ job that does what the seed's worker does to the database: two status
UPDATEs on its Postgres row (``running``, then ``completed``), through an async pool.
``enqueue`` creates N rows in ``replica_tasks`` and adds N jobs with ``addBulk``;
``work`` runs one worker process until SIGTERM. ``bullmq`` pins exact versions of
msgpack, semver and croniter, so it lives in its own virtualenv (``make bench`` makes it).
This file imports nothing from the project.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from bullmq import Queue, Worker  # type: ignore[import-not-found]
from psycopg_pool import AsyncConnectionPool

QUEUE = "agentq-replica"


def _connection(url: str) -> dict[str, Any]:
    return {"connection": url}


async def enqueue(redis_url: str, database_url: str, tasks: int) -> None:
    async with (
        AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool,
        pool.connection() as conn,
    ):
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS replica_tasks (id int PRIMARY KEY, status text NOT NULL,"
            " started_at timestamptz, completed_at timestamptz)"
        )
        await conn.execute("TRUNCATE replica_tasks")
        await conn.execute(
            "INSERT INTO replica_tasks (id, status) SELECT n, 'queued' FROM generate_series(1, %s) AS n",
            (tasks,),
        )
    queue = Queue(QUEUE, _connection(redis_url))
    batch = 500
    for start in range(1, tasks + 1, batch):
        jobs = [{"name": "task", "data": {"id": n}} for n in range(start, min(start + batch, tasks + 1))]
        await queue.addBulk(jobs)
    await queue.close()


async def work(redis_url: str, database_url: str, concurrency: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with AsyncConnectionPool(database_url, min_size=1, max_size=concurrency + 2, open=False) as pool:

        async def process(job: Any, token: str) -> None:
            async with pool.connection() as conn:
                await conn.execute(
                    "UPDATE replica_tasks SET status = 'running', started_at = now() WHERE id = %s",
                    (job.data["id"],),
                )
                await conn.execute(
                    "UPDATE replica_tasks SET status = 'completed', completed_at = now() WHERE id = %s",
                    (job.data["id"],),
                )

        worker = Worker(QUEUE, process, {**_connection(redis_url), "concurrency": concurrency})
        await stop.wait()
        await worker.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["enqueue", "work"])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if args.command == "enqueue":
        asyncio.run(enqueue(args.redis, args.database, args.tasks))
    else:
        asyncio.run(work(args.redis, args.database, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
