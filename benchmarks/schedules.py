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
from dataclasses import dataclass

import psycopg
import redis

from benchmarks.summary import Figure
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


@dataclass(frozen=True)
class DispatchResult:
    """What two racing ticks did with N due schedules."""

    schedules: int
    elapsed_s: float
    started: tuple[int, int]
    messages: int
    queued: int
    moved: int

    @property
    def exact(self) -> bool:
        """Every schedule fired exactly once: one message, one queued task, its next run moved."""
        return sum(self.started) == self.messages == self.queued == self.moved == self.schedules


def run(schedules: int) -> DispatchResult:
    """Seed ``schedules`` due schedules in a fresh database and time two ticks dispatching them."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    with temporary_database() as url:
        PostgresTaskStore(url).migrate()
        os.environ.update(
            DATABASE_URL=url, REDIS_URL=REDIS_URL, AGENTQ_ALLOW_SCRIPTED="true"
        )  # an entry point: aim the runtime here
        from actors import runtime
        from actors.schedules.tick import dispatch_due_schedules

        agent = runtime.store.create_agent(
            NewAgent(provider="scripted", model="scripted-1", organization_id=ORG, name="bench"), now=utcnow()
        )
        _seed(url, agent.id, schedules)
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
    client.flushdb()
    started = (reports[0].started, reports[1].started) if len(reports) == 2 else (0, 0)
    return DispatchResult(schedules, elapsed, started, messages, queued, moved)


def figures(result: DispatchResult) -> list[Figure]:
    """Seconds to dispatch every due schedule (target 10 s for 10,000), exactly once each."""
    return [
        Figure(
            "scheduler dispatch",
            f"{result.schedules:,} schedules due, two racing ticks",
            f"{result.elapsed_s:.2f} s ({result.schedules / result.elapsed_s:,.0f}/s)",
            f"ticks {result.started[0]:,} + {result.started[1]:,}; {result.messages:,} messages,"
            f" each schedule {'once' if result.exact else 'NOT exactly once'}",
            "≤ 10 s, each once",
            result.exact and result.elapsed_s <= 10,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.schedules")
    parser.add_argument("--schedules", type=int, default=10_000)
    args = parser.parse_args(argv)
    result = run(args.schedules)
    print("| figure | value |\n|---|---:|")
    print(f"| schedules due | {result.schedules} |")
    print(f"| dispatch seconds (two racing ticks) | {result.elapsed_s:.2f} |")
    print(f"| schedules/s | {result.schedules / result.elapsed_s:.0f} |")
    print(f"| started by tick 1 / tick 2 | {result.started[0]} / {result.started[1]} |")
    print(f"| messages in Redis | {result.messages} |")
    print(f"| tasks queued / next_run_at moved | {result.queued} / {result.moved} |")
    print(f"| verdict | {'PASS' if result.exact and result.elapsed_s <= 10 else 'FAIL'} |")
    return 0 if result.exact else 1


if __name__ == "__main__":
    sys.exit(main())
