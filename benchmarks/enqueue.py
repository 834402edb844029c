"""Enqueue rate: tasks a producer creates and queues per second, one at a time vs in bulk (issue #9).

    python -m benchmarks.enqueue            # N=5,000 tasks per case
    python -m benchmarks.enqueue --quick    # N=1,000

Cases, each on an emptied task table and Redis db:

* **one by one** — ``create_task`` + ``add_task`` per task (about 5 Postgres round trips and
  1 Redis round trip each);
* **bulk** — ``create_tasks`` + ``add_tasks`` per batch of 100 and of 1,000 (a few Postgres
  statements and one Redis ``MULTI/EXEC`` per batch).

The producer runs in this process (the lane broker, the full middleware stack, Postgres store);
no worker runs, so the rate is the producer's alone. Every case checks that all N tasks ended
``queued`` with one message each in Redis. The Postgres database ``agentq_bench_<random>`` is
created, migrated and dropped here; Redis db 12 is flushed before every case and at the end.
The table is printed and written to ``benchmarks/results/enqueue-latest.md``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

from actors.agent_actor import AgentJob, agent_actor
from actors.runtime import Runtime, build_runtime
from benchmarks.pipeline import DB_PREFIX, DEFAULT_PG_ADMIN_URL, _admin, _database_url, _machine
from benchmarks.summary import Figure, rate
from config.settings import load_settings
from middleware.task_lifecycle import AttemptResult
from taskstore import NewAgent, utcnow
from taskstore.postgres import PostgresTaskStore

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
OUTPUT = Path(__file__).resolve().parent / "results" / "enqueue-latest.md"
ORG = "e9e00000-0000-4000-8000-000000000000"
#: (case, batch size); batch 1 means ``create_task`` + ``add_task`` per task.
CASES = (
    ("create_task + add_task, one by one", 1),
    ("create_tasks + add_tasks, batches of 100", 100),
    ("create_tasks + add_tasks, batches of 1,000", 1000),
)


def _enqueue(runtime: Runtime, agent_id: str, tasks: int, batch: int) -> None:
    queue = runtime.queue
    if batch == 1:
        for n in range(tasks):
            queue.add_task(queue.create_task(agent_id=agent_id, organization_id=ORG, title=f"task {n}").id)
        return
    for start in range(0, tasks, batch):
        items = [
            {"agent_id": agent_id, "organization_id": ORG, "title": f"task {n}"}
            for n in range(start, min(start + batch, tasks))
        ]
        queue.add_tasks([task.id for task in queue.create_tasks(items)])


def _reset(database_url: str, client: redis.Redis) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE ai_agent_task_steps, ai_agent_task_runs, ai_agent_tasks")
    client.flushdb()


def _check(database_url: str, client: redis.Redis, tasks: int) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FILTER (WHERE status = 'queued') FROM ai_agent_tasks").fetchone()
    messages = int(client.hlen("agentq:general.msgs"))
    if row is None or row[0] != tasks or messages != tasks:
        raise RuntimeError(f"expected {tasks} queued tasks and messages, found {row} and {messages}")


def run(
    tasks: int, *, redis_url: str = DEFAULT_REDIS_URL, pg_admin_url: str = DEFAULT_PG_ADMIN_URL
) -> list[dict[str, Any]]:
    """Measure every case with ``tasks`` tasks; rows with ``case``, ``batch``, ``tasks``, ``seconds``,
    ``tasks_per_s`` (and ``machine``: lines describing the setup, on the first row)."""
    db_name = f"{DB_PREFIX}{secrets.token_hex(4)}"
    database_url = _database_url(pg_admin_url, db_name)
    client = redis.Redis.from_url(redis_url)
    _admin(pg_admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    settings = load_settings(redis_url=redis_url, database_url=database_url, rate_limit_max=0)
    runtime = build_runtime(settings, store=PostgresTaskStore(database_url))
    try:
        runtime.store.migrate()

        @agent_actor(
            kind="general", store=runtime.store, orchestrator=runtime.orchestrator, broker=runtime.broker
        )
        def general(job: AgentJob) -> AttemptResult:  # declares the kind the bench agent names
            return job.run_agent()

        agent_id = runtime.store.create_agent(
            NewAgent(provider="scripted", model="scripted-1", organization_id=ORG, name="bench"), now=utcnow()
        ).id
        rows: list[dict[str, Any]] = []
        for case, batch in CASES:
            _reset(database_url, client)
            _enqueue(runtime, agent_id, min(batch, 100) * 2, batch)  # warm up connections and statements
            _reset(database_url, client)
            started = time.perf_counter()
            _enqueue(runtime, agent_id, tasks, batch)
            seconds = time.perf_counter() - started
            _check(database_url, client, tasks)
            rows.append(
                {
                    "case": case,
                    "batch": batch,
                    "tasks": tasks,
                    "seconds": seconds,
                    "tasks_per_s": tasks / seconds,
                }
            )
            print(f"{case}: {tasks / seconds:.0f} tasks/s", file=sys.stderr, flush=True)
        rows[0]["machine"] = _machine(client, database_url)
        return rows
    finally:
        runtime.broker.close()
        runtime.store.close()
        client.flushdb()
        client.close()
        _admin(
            pg_admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name))
        )


def render(rows: list[dict[str, Any]]) -> str:
    """The markdown report."""
    single = rows[0]["tasks_per_s"]
    lines = [
        "# Enqueue rate: one by one vs bulk",
        "",
        f"N={rows[0]['tasks']} tasks per case; producer only (no worker), Postgres store, lane broker.",
        "",
        *rows[0].get("machine", []),
        "",
        "| case | tasks/s | seconds | speed-up vs one by one |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        rate = row["tasks_per_s"]
        lines.append(f"| {row['case']} | {rate:.0f} | {row['seconds']:.2f} | {rate / single:.1f} |")
    return "\n".join(lines) + "\n"


def figures(rows: list[dict[str, Any]]) -> list[Figure]:
    """Bulk enqueue rates beside one-by-one (no target; BullMQ's ``addBulk`` reached ≈ 9,000/s here)."""
    single = rows[0]["tasks_per_s"]
    return [
        Figure(
            "enqueue rate",
            f"{row['case']} ({row['tasks']:,} tasks)",
            rate(row["tasks_per_s"]),
            "—" if index == 0 else f"one by one {rate(single)}: {row['tasks_per_s'] / single:.1f} times",
            "—",
            None,
        )
        for index, row in enumerate(rows)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.enqueue", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="N=1,000 instead of 5,000")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per case (overrides --quick)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_ENQUEUE_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    tasks = args.tasks or (1000 if args.quick else 5000)
    if not args.redis_url.rstrip("/").rsplit("/", 1)[-1].isdigit():
        parser.error("--redis-url must name a dedicated db number (it is flushed), e.g. redis://host:6379/12")
    report = render(run(tasks, redis_url=args.redis_url, pg_admin_url=args.pg_admin_url))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
