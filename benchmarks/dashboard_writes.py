"""What migration 0007's indexes cost the write path: task transitions with and without them.

    python -m benchmarks.dashboard_writes [--tasks 2000] [--threads 8] [--repeats 3] [--background 200000]

In a fresh Postgres database holding ``--background`` finished tasks (so every index has a real
size), ``--threads`` threads take ``--tasks`` new tasks through ``pending → queued → running →
completed`` on the Postgres store (group commit on, as workers run), timed from the first enqueue to
the last completion. Two index sets alternate, ``--repeats`` times each: 0007's (the list's
``created_at``-ordered indexes, the live partial index, the title trigram index) and 0006's (put back:
``status, run_at``, ``agent_id``, ``organization_id, created_at``), and 0007's without the trigram
index. Prints tasks/s of each and their ratios; no broker, no worker process: only what the database
does differs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from datetime import timedelta

import psycopg

from taskstore import NewAgent, NewTask, Usage, new_id, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.services import temporary_database

ORG = "0d0d0d0d-0000-4000-8000-000000000000"
#: Indexes 0007 adds (dropped for the "0006" set).
INDEXES_0007 = (
    "ai_agent_tasks_created_idx",
    "ai_agent_tasks_status_created_idx",
    "ai_agent_tasks_agent_created_idx",
    "ai_agent_tasks_organization_created_idx",
    "ai_agent_tasks_live_idx",
    "ai_agent_tasks_title_trgm_idx",
)
_INDEX = "CREATE INDEX IF NOT EXISTS {} ON ai_agent_tasks {}"
#: 0007's index set, as the migration creates it.
CREATE_0007 = (
    _INDEX.format("ai_agent_tasks_created_idx", "(created_at, id)"),
    _INDEX.format("ai_agent_tasks_status_created_idx", "(status, created_at, id)"),
    _INDEX.format("ai_agent_tasks_agent_created_idx", "(agent_id, created_at, id)"),
    _INDEX.format("ai_agent_tasks_organization_created_idx", "(organization_id, created_at, id)"),
    _INDEX.format(
        "ai_agent_tasks_live_idx", "(status, organization_id, priority, run_at) WHERE archived_at IS NULL"
    ),
    _INDEX.format("ai_agent_tasks_title_trgm_idx", "USING gin (title gin_trgm_ops)"),
    "DROP INDEX IF EXISTS ai_agent_tasks_status_idx",
    "DROP INDEX IF EXISTS ai_agent_tasks_agent_idx",
    "DROP INDEX IF EXISTS ai_agent_tasks_organization_idx",
)
#: 0007's without the title's trigram index (what the GIN index costs on its own).
CREATE_0007_NO_TRIGRAM = (*CREATE_0007, "DROP INDEX IF EXISTS ai_agent_tasks_title_trgm_idx")
#: 0006's index set: 0007's dropped, the three it superseded back.
CREATE_0006 = (
    *(f"DROP INDEX IF EXISTS {name}" for name in INDEXES_0007),
    _INDEX.format("ai_agent_tasks_status_idx", "(status, run_at)"),
    _INDEX.format("ai_agent_tasks_agent_idx", "(agent_id)"),
    _INDEX.format("ai_agent_tasks_organization_idx", "(organization_id, created_at)"),
)


def _apply(url: str, statements: tuple[str, ...]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute("VACUUM ANALYZE ai_agent_tasks")


def _one_round(store: PostgresTaskStore, agent_id: str, tasks: int, threads: int) -> float:
    """Tasks/s through pending → queued → running → completed, ``threads`` at a time."""
    now = utcnow()
    created: list[str] = []
    for start in range(0, tasks, 500):
        batch = [
            NewTask(agent_id=agent_id, organization_id=ORG, title=f"Invoice reconciliation {start + n}")
            for n in range(min(500, tasks - start))
        ]
        created.extend(task.id for task in store.create_tasks(batch, now=now))
    chunks = [created[index::threads] for index in range(threads)]

    def work(ids: list[str]) -> None:
        for task_id in ids:
            moment = utcnow()
            store.mark_queued(task_id, priority=None, run_at=moment, now=moment)
            run_id = new_id()
            claim = store.claim(
                task_id,
                run_id=run_id,
                worker_id="bench",
                lease_until=moment + timedelta(seconds=30),
                now=moment,
            )
            assert claim is not None
            assert store.complete(
                task_id, run_id, result={"ok": True}, usage=Usage(), transcript=None, now=utcnow()
            )

    pool = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks]
    began = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=600)
    return tasks / (time.perf_counter() - began)


def run(tasks: int, threads: int, repeats: int, background: int) -> dict[str, list[float]]:
    sets = {"0007": CREATE_0007, "0007 without trigram": CREATE_0007_NO_TRIGRAM, "0006": CREATE_0006}
    rates: dict[str, list[float]] = {name: [] for name in sets}
    with temporary_database() as url:
        store = PostgresTaskStore(url, max_size=threads + 4)
        store.migrate()
        agent = store.create_agent(
            NewAgent(organization_id=ORG, name="bench", provider="scripted"), now=utcnow()
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO ai_agent_tasks (agent_id, organization_id, title, status, completed_at,"
                " created_at) SELECT %s, %s, 'Weekly report for store ' || n, 'completed', now(),"
                " now() - n * interval '1 s' FROM generate_series(1, %s) AS n",
                (agent.id, ORG, background),
            )
        for _ in range(repeats):
            for name, statements in sets.items():
                _apply(url, statements)
                rates[name].append(_one_round(store, agent.id, tasks, threads))
        store.close()
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard_writes")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--background", type=int, default=200_000)
    args = parser.parse_args(argv)
    rates = run(args.tasks, args.threads, args.repeats, args.background)
    print("| index set | tasks/s per round | median |\n|---|---|---:|")
    for name, values in rates.items():
        rounds = ", ".join(f"{value:,.0f}" for value in values)
        print(f"| {name} | {rounds} | {statistics.median(values):,.0f} |")
    for name in ("0007", "0007 without trigram"):
        ratio = statistics.median(rates[name]) / statistics.median(rates["0006"])
        print(f"{name} / 0006 (median): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
