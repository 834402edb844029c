"""Soak under faults: N tasks through several workers while workers are SIGKILLed, Redis is flushed
and Postgres is cut off.

    python -m benchmarks.soak [--tasks 2000] [--workers 3] [--kill-every 3] [--outage 45] [--seed 7]

Enqueues ``--tasks`` scripted tasks that each take 50-300 ms on the local Redis (db 11
unless ``--redis-url`` says otherwise; flushed) and a fresh Postgres database, then starts
``--workers`` separate ``dramatiq actors`` processes, which reach the database through a
TCP proxy. Every few seconds it SIGKILLs a random worker and starts a new one, flushes
Redis a third of the way through, and halfway through cuts the proxy for ``--outage``
seconds (every worker loses the database; no kills meanwhile). It ends when every task
is finished (bounded by ``--timeout``) and checks, from the database, that every task
completed exactly once: one completed run per task, none lost, none stuck. Exits 1
otherwise. Prints the figures as a small table.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg
import redis

from taskstore import NewAgent, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import TcpProxy, WorkerProcess, command_env
from tests.services import temporary_database

REDIS_URL = "redis://127.0.0.1:6379/11"
ORG = "50a50a50-0000-4000-8000-000000000000"
FAULT_SETTINGS = {
    "AGENTQ_STALLED_INTERVAL_MS": "3000",
    "AGENTQ_RECONCILE_INTERVAL_MS": "2000",
    "AGENTQ_PENDING_GRACE_MS": "5000",
    "AGENTQ_RATE_LIMIT_MAX": "0",
    # Random kills may hit the same task twice; the default limit of 1 would rightly fail it.
    "AGENTQ_MAX_STALLED_COUNT": "5",
    "AGENTQ_ALLOW_SCRIPTED": "true",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills (jittered)")
    parser.add_argument("--outage", type=float, default=45.0, help="seconds Postgres is cut off (0: none)")
    parser.add_argument("--redis-url", default=REDIS_URL, help="a Redis database the soak may flush")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def _report(store_url: str, started: float, kills: int, flushed: bool, outage: str) -> tuple[bool, str]:
    with psycopg.connect(store_url) as conn:
        statuses: dict[str, int] = dict(
            conn.execute("SELECT status, count(*) FROM ai_agent_tasks GROUP BY status").fetchall()
        )
        runs: dict[str, int] = dict(
            conn.execute("SELECT status, count(*) FROM ai_agent_task_runs GROUP BY status").fetchall()
        )
        completed_runs = Counter(
            row[0]
            for row in conn.execute(
                "SELECT task_id FROM ai_agent_task_runs WHERE status = 'completed'"
            ).fetchall()
        )
        (stalls,) = conn.execute("SELECT coalesce(sum(stalled_count), 0) FROM ai_agent_tasks").fetchone() or (
            0,
        )
        (total,) = conn.execute("SELECT count(*) FROM ai_agent_tasks").fetchone() or (0,)
    twice = sum(1 for count in completed_runs.values() if count > 1)
    ok = statuses.get("completed", 0) == total and len(completed_runs) == total and twice == 0
    lines = [
        "| figure | value |",
        "|---|---:|",
        f"| tasks | {total} |",
        f"| completed | {statuses.get('completed', 0)} |",
        f"| other statuses | {({k: v for k, v in statuses.items() if k != 'completed'}) or 'none'} |",
        f"| tasks with exactly one completed run | {sum(1 for c in completed_runs.values() if c == 1)} |",
        f"| tasks completed more than once | {twice} |",
        f"| runs by status | {dict(sorted(runs.items()))} |",
        f"| workers SIGKILLed | {kills} |",
        f"| stalls recovered (sum of stalled_count) | {stalls} |",
        f"| Redis flushed mid-run | {'yes' if flushed else 'no'} |",
        f"| Postgres cut off mid-run | {outage} |",
        f"| wall time | {time.monotonic() - started:.1f} s |",
        f"| verdict | {'PASS' if ok else 'FAIL'} |",
    ]
    return ok, "\n".join(lines)


def _enqueue(store_url: str, redis_url: str, tasks: int, rng: random.Random) -> list[str]:
    # This script is an entry point: point the package's runtime at the soak's database and Redis.
    os.environ.update(DATABASE_URL=store_url, REDIS_URL=redis_url)
    from actors import agent_task_queue, runtime

    agent = runtime.store.create_agent(
        NewAgent(provider="scripted", model="scripted-1", organization_id=ORG, name="soak"), now=utcnow()
    )
    ids = []
    for index in range(tasks):
        script = [{"answer": f"done {index}", "sleep_ms": rng.randint(50, 300)}]
        task = agent_task_queue.create_task(
            agent_id=agent.id, organization_id=ORG, title=f"soak {index}", context={"script": script}
        )
        ids.append(task.id)
    for task_id in ids:
        agent_task_queue.add_task(task_id)
    runtime.store.close()
    return ids


class _Outage:
    """Cuts the workers' database connections once, for ``seconds``, when told to start."""

    def __init__(self, proxy: TcpProxy, seconds: float) -> None:
        self.proxy = proxy
        self.seconds = seconds
        self.started_at: float | None = None
        self.ended_at: float | None = None

    @property
    def active(self) -> bool:
        return self.started_at is not None and self.ended_at is None

    def step(self, due: bool) -> None:
        """Start the outage when ``due`` (once); end it after its length."""
        now = time.monotonic()
        if self.started_at is None and due and self.seconds > 0:
            self.proxy.cut()
            self.started_at = now
            print(f"Postgres cut off for {self.seconds:g} s", flush=True)
        elif self.active and self.started_at is not None and now - self.started_at >= self.seconds:
            self.proxy.restore()
            self.ended_at = now
            print("Postgres reachable again", flush=True)

    def describe(self) -> str:
        if self.started_at is None:
            return "no"
        end = self.ended_at if self.ended_at is not None else time.monotonic()
        return f"yes, {end - self.started_at:.0f} s"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    rng = random.Random(args.seed)
    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    with (
        temporary_database() as store_url,
        tempfile.TemporaryDirectory(prefix="agentq-soak-") as logs,
        TcpProxy() as proxy,
    ):
        PostgresTaskStore(store_url).migrate()
        env = command_env(DATABASE_URL=proxy.through(store_url), REDIS_URL=args.redis_url, **FAULT_SETTINGS)
        started = time.monotonic()
        serial = 0

        def start() -> WorkerProcess:
            nonlocal serial
            serial += 1
            return WorkerProcess(env, Path(logs) / f"worker-{serial}.log", threads=args.threads)

        pool: list[WorkerProcess] = []
        try:
            # Workers start once every task is enqueued, so the faults fall on the whole run.
            task_ids = _enqueue(store_url, args.redis_url, args.tasks, rng)
            pool.extend(start() for _ in range(args.workers))
            enqueued_s = time.monotonic() - started
            print(f"enqueued {len(task_ids)} tasks in {enqueued_s:.1f} s; chaos begins", flush=True)
            kills, flushed = 0, False
            outage = _Outage(proxy, args.outage)
            checker = PostgresTaskStore(store_url, max_size=2)
            next_kill = time.monotonic() + args.kill_every
            while time.monotonic() - started < args.timeout:
                counts = checker.queue_counts(now=utcnow())
                done = counts.completed + counts.failed
                if done >= args.tasks and not outage.active:
                    break
                if not flushed and done >= args.tasks // 3:
                    client.flushdb()
                    flushed = True
                    print(f"flushed Redis at {done} finished tasks", flush=True)
                outage.step(due=done >= args.tasks // 2)
                if time.monotonic() >= next_kill and done < args.tasks * 0.9 and not outage.active:
                    victim = pool.pop(rng.randrange(len(pool)))
                    victim.kill()
                    kills += 1
                    pool.append(start())
                    next_kill = time.monotonic() + args.kill_every * rng.uniform(0.6, 1.4)
                time.sleep(0.25)
            proxy.restore()
            for worker in pool:
                worker.terminate(timeout_s=120)
            checker.close()
        finally:  # no worker outlives the soak, whatever happened
            for worker in pool:
                worker.close()
        ok, table = _report(store_url, started, kills, flushed, outage.describe())
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
