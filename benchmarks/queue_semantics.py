"""Issue #5's measurements with real workers (`dramatiq actors --processes 2`) on Redis and Postgres.

    python -m benchmarks.queue_semantics [--pause-s 180]

1. Priority: 500 priority-1 tasks of ~50 ms wait, two worker processes run them; a
   priority-10 task is added, then a priority-7 one behind a priority-3 backlog. Reports
   how many backlog tasks started after each was added and before it (bound: threads +
   prefetch = 2 x (8 + 16)).
2. Rate limit: 10 starts per 2 s, 60 tasks: total seconds and the most starts in any 2 s
   window of ``started_at``.
3. Pause: 200 tasks wait and 4 run; paused for ``--pause-s`` (default 3 minutes); the 4
   finish, none starts; after resume all 200 complete exactly once.
4. Fairness: org A enqueues 2,000 tasks, then org B 5: B's wait, and how much of A's
   backlog had drained when B's last task started.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

import psycopg
import redis

from benchmarks.pipeline import run_worker
from taskstore import NewAgent, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.services import temporary_database

REDIS_URL = "redis://127.0.0.1:6379/13"
ORG_A = "a0000000-0000-4000-8000-00000000000a"
ORG_B = "b0000000-0000-4000-8000-00000000000b"
PROCESSES, THREADS = 2, 8


def wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def count(url: str, sql: str, params: tuple[object, ...] = ()) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def started(url: str, task_id: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT started_at FROM ai_agent_tasks WHERE id = %s", (task_id,)).fetchone()
    return row[0] if row else None


def has_started(url: str, task_id: str) -> bool:
    return started(url, task_id) is not None


def reset(url: str, client: redis.Redis) -> None:
    client.flushdb()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE ai_agent_task_steps, ai_agent_task_runs, ai_agent_tasks")


def sleepy(ms: int) -> dict[str, object]:
    return {"script": [{"answer": "ok", "sleep_ms": ms}]}


def priority(url: str, client: redis.Redis, env: dict[str, str], logs: Path, agent_id: str) -> list[str]:
    from actors import agent_task_queue as queue

    reset(url, client)
    backlog = [
        queue.create_task(
            agent_id=agent_id, organization_id=ORG_A, title="b", priority=1, context=sleepy(50)
        ).id
        for _ in range(500)
    ]
    for task_id in backlog:
        queue.add_task(task_id)
    lines = []
    with run_worker("actors", PROCESSES, THREADS, env, logs / "priority.log"):
        wait(
            lambda: count(url, "SELECT count(*) FROM ai_agent_tasks WHERE started_at IS NOT NULL") >= 40,
            60,
            "the backlog to start",
        )
        for urgent_priority, backlog_priority in ((10, 1), (7, 3)):
            if backlog_priority == 3:
                extra = [
                    queue.create_task(
                        agent_id=agent_id, organization_id=ORG_A, title="b3", priority=3, context=sleepy(50)
                    ).id
                    for _ in range(200)
                ]
                for task_id in extra:
                    queue.add_task(task_id)
            task = queue.create_task(
                agent_id=agent_id,
                organization_id=ORG_A,
                title="urgent",
                priority=urgent_priority,
                context=sleepy(50),
            )
            added = queue.add_task(task.id).task.queued_at
            wait(partial(has_started, url, task.id), 60, "the urgent task")
            before = count(
                url,
                "SELECT count(*) FROM ai_agent_tasks WHERE priority = %s AND started_at >= %s"
                " AND started_at < (SELECT started_at FROM ai_agent_tasks WHERE id = %s)",
                (backlog_priority, added, task.id),
            )
            bound = PROCESSES * (THREADS + 2 * THREADS)
            lines.append(
                f"| priority {urgent_priority} behind priority-{backlog_priority} backlog | {before} backlog"
                f" tasks started between its enqueue and its start (bound {bound}) |"
            )
    return lines


def rate_limit(url: str, client: redis.Redis, env: dict[str, str], logs: Path, agent_id: str) -> list[str]:
    from actors import agent_task_queue as queue

    reset(url, client)
    ids = [queue.create_task(agent_id=agent_id, organization_id=ORG_A, title="r").id for _ in range(60)]
    for task_id in ids:
        queue.add_task(task_id)
    limited = {**env, "AGENTQ_RATE_LIMIT_MAX": "10", "AGENTQ_RATE_LIMIT_WINDOW_MS": "2000"}
    with run_worker("actors", PROCESSES, THREADS, limited, logs / "rate.log"):
        wait(
            lambda: count(url, "SELECT count(*) FROM ai_agent_tasks WHERE status = 'completed'") == 60,
            120,
            "the limited tasks",
        )
    with psycopg.connect(url) as conn:
        starts = [row[0] for row in conn.execute("SELECT started_at FROM ai_agent_tasks ORDER BY started_at")]
    most = max(sum(1 for s in starts if first <= s < first + timedelta(seconds=2)) for first in starts)
    total = (starts[-1] - starts[0]).total_seconds()
    return [
        f"| rate limit 10 per 2 s, 60 tasks | first to last start {total:.1f} s; most starts in any 2 s"
        f" window: {most} |"
    ]


def pause(
    url: str, client: redis.Redis, env: dict[str, str], logs: Path, agent_id: str, pause_s: float
) -> list[str]:
    from actors import agent_task_queue as queue

    reset(url, client)
    running = [
        queue.create_task(agent_id=agent_id, organization_id=ORG_A, title="long", context=sleepy(5000)).id
        for _ in range(4)
    ]
    waiting = [
        queue.create_task(agent_id=agent_id, organization_id=ORG_A, title="w", context=sleepy(20)).id
        for _ in range(200)
    ]
    with run_worker("actors", PROCESSES, THREADS, env, logs / "pause.log"):
        for task_id in running:
            queue.add_task(task_id)
        wait(
            lambda: count(url, "SELECT count(*) FROM ai_agent_tasks WHERE status = 'running'") == 4,
            30,
            "4 running",
        )
        queue.pause_queue()
        for task_id in waiting:
            queue.add_task(task_id)
        time.sleep(pause_s)
        finished = count(
            url, "SELECT count(*) FROM ai_agent_tasks WHERE id = ANY(%s) AND status = 'completed'", (running,)
        )
        started_during = count(
            url,
            "SELECT count(*) FROM ai_agent_tasks WHERE id = ANY(%s) AND started_at IS NOT NULL",
            (waiting,),
        )
        stats = queue.get_queue_stats()
        queue.resume_queue()
        wait(
            lambda: count(url, "SELECT count(*) FROM ai_agent_tasks WHERE status = 'completed'") == 204,
            120,
            "everything after the resume",
        )
    runs = count(url, "SELECT count(*) FROM ai_agent_task_runs WHERE task_id = ANY(%s)", (waiting,))
    return [
        f"| pause {pause_s:.0f} s with 200 waiting and 4 running | {finished}/4 finished, {started_during}"
        f" started while paused (stats paused={stats.paused}); after resume 200 completed with {runs} runs |"
    ]


def fairness(
    url: str, client: redis.Redis, env: dict[str, str], logs: Path, agent_a: str, agent_b: str
) -> list[str]:
    from actors import agent_task_queue as queue

    reset(url, client)
    burst = [
        queue.create_task(agent_id=agent_a, organization_id=ORG_A, title="a", context=sleepy(20)).id
        for _ in range(2000)
    ]
    for task_id in burst:
        queue.add_task(task_id)
    small = [
        queue.create_task(agent_id=agent_b, organization_id=ORG_B, title="b", context=sleepy(20)).id
        for _ in range(5)
    ]
    enqueued = utcnow()
    for task_id in small:
        queue.add_task(task_id)
    with run_worker("actors", PROCESSES, THREADS, env, logs / "fair.log"):
        wait(lambda: all(started(url, task_id) for task_id in small), 120, "B's tasks")
        last_b = max(started(url, task_id) for task_id in small)  # type: ignore[type-var]
        a_done = count(
            url,
            "SELECT count(*) FROM ai_agent_tasks WHERE organization_id = %s AND started_at <= %s",
            (ORG_A, last_b),
        )
    waited = (last_b - enqueued).total_seconds()  # type: ignore[operator]
    return [
        f"| org A 2,000 tasks then org B 5 | B's last task started {waited:.2f} s"
        f" after enqueue, when {a_done} of A's 2,000 had started |"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.queue_semantics")
    parser.add_argument("--pause-s", type=float, default=180.0)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(REDIS_URL)
    with temporary_database() as url, tempfile.TemporaryDirectory(prefix="agentq-semantics-") as tmp:
        PostgresTaskStore(url).migrate()
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "AGENTQ_RATE_LIMIT_MAX": "0",
            "AGENTQ_ALLOW_SCRIPTED": "true",
            "QUEUE_CONCURRENCY": str(THREADS),
        }
        os.environ.update(env)  # an entry point: the producer's runtime reads the same settings
        from actors import runtime

        agent_a = runtime.store.create_agent(
            NewAgent(provider="scripted", model="scripted-1", organization_id=ORG_A, name="a"), now=utcnow()
        ).id
        agent_b = runtime.store.create_agent(
            NewAgent(provider="scripted", model="scripted-1", organization_id=ORG_B, name="b"), now=utcnow()
        ).id
        logs = Path(tmp)
        lines = ["| measurement | result |", "|---|---|"]
        lines += priority(url, client, env, logs, agent_a)
        lines += rate_limit(url, client, env, logs, agent_a)
        lines += fairness(url, client, env, logs, agent_a, agent_b)
        lines += pause(url, client, env, logs, agent_a, args.pause_s)
        runtime.store.close()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
