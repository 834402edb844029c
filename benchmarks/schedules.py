"""Scheduler dispatch: N schedules due in the same minute, enqueued by two ticks racing.

    python -m benchmarks.schedules [--schedules 10000]

Creates N scheduled tasks (one ``INSERT … SELECT``) in a fresh Postgres database, all
due now, then runs the tick's dispatcher twice at once (two threads, as two
``periodiq actors`` would) against Redis db 12. Reports the seconds from the tick to
the last message enqueued, and checks that every schedule fired exactly once: N
messages in Redis, N tasks ``queued``, every ``next_run_at`` moved to the next minute.
Target (issue #6 / #9): 10,000 schedules in at most 10 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import psycopg
import redis

from taskstore import NewAgent, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.services import temporary_database

REDIS_URL = "redis://127.0.0.1:6379/12"
ORG = "5c4ed000-0000-4000-8000-000000000000"


def _seed(url: str, agent_id: str, count: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO ai_agent_tasks (agent_id, organization_id, title, task_type, schedule_cron,"
            " schedule_timezone, next_run_at)"
            " SELECT %s, %s, 'schedule ' || n, 'scheduled', '* * * * *', 'Europe/Paris',"
            " date_trunc('minute', now()) FROM generate_series(1, %s) AS n",
            (agent_id, ORG, count),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.schedules")
    parser.add_argument("--schedules", type=int, default=10_000)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    with temporary_database() as url:
        PostgresTaskStore(url).migrate()
        os.environ.update(DATABASE_URL=url, REDIS_URL=REDIS_URL)  # an entry point: aim the runtime here
        from actors import runtime
        from actors.scheduler import dispatch_due_schedules

        agent = runtime.store.create_agent(NewAgent(organization_id=ORG, name="bench"), now=utcnow())
        _seed(url, agent.id, args.schedules)
        reports = []
        start = time.perf_counter()

        def tick() -> None:
            reports.append(dispatch_due_schedules(runtime.store, runtime.broker))

        ticks = [threading.Thread(target=tick) for _ in range(2)]
        for thread in ticks:
            thread.start()
        for thread in ticks:
            thread.join(timeout=300)
        elapsed = time.perf_counter() - start

        messages = client.hlen("agentq:general.msgs")
        with psycopg.connect(url) as conn:
            queued, moved = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'queued'),"
                " count(*) FILTER (WHERE next_run_at > date_trunc('minute', now()))"
                " FROM ai_agent_tasks WHERE task_type = 'scheduled'"
            ).fetchone() or (0, 0)
        runtime.store.close()
    started = sum(report.started for report in reports)
    ok = started == messages == queued == moved == args.schedules
    print("| figure | value |\n|---|---:|")
    print(f"| schedules due | {args.schedules} |")
    print(f"| dispatch seconds (two racing ticks) | {elapsed:.2f} |")
    print(f"| schedules/s | {args.schedules / elapsed:.0f} |")
    print(f"| started by tick 1 / tick 2 | {reports[0].started} / {reports[1].started} |")
    print(f"| messages in Redis | {messages} |")
    print(f"| tasks queued / next_run_at moved | {queued} / {moved} |")
    print(f"| verdict | {'PASS' if ok and elapsed <= 10 else 'FAIL'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
