"""Pipeline throughput with live events published vs switched off, side by side.

Run from the repository root::

    python -m benchmarks.events              # N=1000, 3 repeats, 1 x 8 and 2 x 8
    python -m benchmarks.events --quick      # N=300, 1 repeat

Each repeat drains N tasks through ``dramatiq actors`` (full middleware stack, Postgres, the
``scripted`` provider answering at once) twice per worker configuration, interleaved: **off**
(``AGENTQ_EVENTS_ENABLED=false``; the producer's queue publishes nothing either) and **on** (the
default: the producer publishes ``queued``, the worker ``running``, ``llm_started``,
``llm_completed`` and ``completed`` — five ``XADD``s per task, sent in pipelined batches by each
process's publishing thread). The throughput ratio on/off is the figure of merit; worker CPU and
Postgres + Redis CPU per task show where the cost goes, and the enqueue rate (``create_task`` +
``add_task`` one by one) the producer's share (its ``queued`` is flushed before the message is sent).
A real agent spends seconds in its model calls: there the same cost is noise.

On a busy machine throughput ratios swing by ±30 %; the **breakdown** is steadier: the same pipeline
in this process (Redis broker, in-memory store, 8 worker threads) with events on, reporting the CPU
the publishing thread spent per task (``EventPublisher.send_cpu_s``) and what ``publish()`` costs the
thread that calls it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from psycopg import sql

from benchmarks.pipeline import (
    DB_PREFIX,
    DEFAULT_PG_ADMIN_URL,
    DEFAULT_REDIS_URL,
    ROOT,
    Bench,
    RunResult,
    _admin,
    _database_url,
    _fmt,
    _median,
)
from benchmarks.summary import Figure, rate

#: (processes, threads) of the worker configurations measured.
CONFIGS: tuple[tuple[int, int], ...] = ((1, 8), (2, 8))
OUTPUT = ROOT / "benchmarks" / "results" / "events-latest.md"


@dataclass(frozen=True)
class Cell:
    """The runs of one worker configuration, events off and on."""

    processes: int
    threads: int
    off: list[RunResult]
    on: list[RunResult]

    def median(self, runs: list[RunResult], field: str) -> float | None:
        return _median([getattr(run, field) for run in runs])

    @property
    def ratio(self) -> float | None:
        on, off = self.median(self.on, "throughput"), self.median(self.off, "throughput")
        return on / off if on is not None and off else None


def run(
    tasks: int,
    repeats: int,
    *,
    redis_url: str = DEFAULT_REDIS_URL,
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL,
) -> list[Cell]:
    """``repeats`` interleaved off/on drains of ``tasks`` tasks for each configuration."""
    db_name = f"{DB_PREFIX}{secrets.token_hex(4)}"
    database_url = _database_url(pg_admin_url, db_name)
    log_dir = Path(tempfile.mkdtemp(prefix="agentq-bench-events-"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "QUEUE_CONCURRENCY": "8",
        "AGENTQ_RATE_LIMIT_MAX": "0",
        "AGENTQ_ALLOW_SCRIPTED": "true",
        "AGENTQ_EVENTS_ENABLED": "true",
    }
    os.environ.update(env)
    redis_client = redis.Redis.from_url(redis_url)
    _admin(pg_admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    results: dict[tuple[int, int, str], list[RunResult]] = {}
    try:
        from actors import runtime
        from actors.task_queue import AgentTaskQueue
        from taskstore import NewAgent, utcnow

        store = runtime.store
        store.migrate()
        org = "00000000-0000-4000-8000-00000000be00"
        agent = store.create_agent(
            NewAgent(
                provider="scripted", model="scripted-1", organization_id=org, name="bench", kind="general"
            ),
            now=utcnow(),
        )
        quiet_queue = AgentTaskQueue(store, runtime.broker, max_attempts=runtime.settings.max_attempts)
        variants = {
            "off": (quiet_queue, {**env, "AGENTQ_EVENTS_ENABLED": "false"}),
            "on": (runtime.queue, env),
        }
        for repeat in range(1, repeats + 1):
            for processes, threads in CONFIGS:
                for name, (queue, variant_env) in variants.items():
                    bench = Bench(
                        redis_client, database_url, queue, store, agent.id, org, variant_env, log_dir
                    )
                    result = bench.run_pipeline(processes, threads, tasks)
                    results.setdefault((processes, threads, name), []).append(result)
                    speed = f"{result.throughput:.1f} tasks/s"
                    print(f"repeat {repeat} {processes}x{threads} events {name}: {speed}", file=sys.stderr)
        store.close()
    finally:
        redis_client.flushdb()
        _admin(
            pg_admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name))
        )
    return [
        Cell(processes, threads, results[(processes, threads, "off")], results[(processes, threads, "on")])
        for processes, threads in CONFIGS
    ]


@dataclass(frozen=True)
class Breakdown:
    """The events' own CPU, measured in one process."""

    tasks: int
    events_per_task: float
    #: Milliseconds of the publishing thread's CPU per task (encoding, redaction, the Lua call).
    send_ms_per_task: float
    #: Microseconds one ``publish()`` costs the calling thread.
    publish_us: float
    mean_batch: float


def breakdown(tasks: int, *, redis_url: str = DEFAULT_REDIS_URL) -> Breakdown:
    """Run ``tasks`` scripted tasks through an in-process worker with events on; see the module docstring."""
    import time

    from actors.events import EventPublisher
    from middleware.events import EventType
    from taskstore import InMemoryTaskStore, utcnow
    from tests.harness import redis_harness, wait_until

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = InMemoryTaskStore()
    with redis_harness(store, redis_url) as app:
        publisher = app.runtime.events
        assert isinstance(publisher, EventPublisher)
        agent_id = app.agent()
        task_ids = [app.task(agent_id) for _ in range(tasks)]
        for start in range(0, tasks, 1000):
            app.queue.add_tasks(task_ids[start : start + 1000])
        with app.worker(threads=8):
            wait_until(
                lambda: store.queue_counts(now=utcnow()).completed == tasks, timeout_s=600, what="drain"
            )
        publisher.flush(10)
        sent, cpu_s, batches = publisher.sent, publisher.send_cpu_s, publisher.batches
    idle = EventPublisher(client, max_buffer=100_000)
    started = time.thread_time()
    for _ in range(10_000):
        idle.publish(task_ids[0], EventType.RUNNING, {"run_id": task_ids[0], "attempt": 1, "worker": "w"})
    publish_us = (time.thread_time() - started) / 10_000 * 1e6
    idle.close(30)
    client.flushdb()
    client.close()
    return Breakdown(tasks, sent / tasks, cpu_s / tasks * 1000, publish_us, sent / max(batches, 1))


def render(cells: list[Cell], tasks: int, repeats: int, parts: Breakdown | None = None) -> str:
    lines = [
        "# Pipeline throughput: live events on vs off",
        "",
        f"N={tasks} tasks per run, median of {repeats} run(s); off and on interleaved.",
        "",
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average at the end"
        f" {' / '.join(f'{load:.1f}' for load in os.getloadavg())} (other processes make ratios noisy)",
        "",
        "| configuration | off tasks/s | on tasks/s | on/off | worker CPU ms/task off / on"
        " | pg+redis CPU ms/task off / on | enqueue tasks/s off / on |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:

        def pair(field: str, digits: int = 1, cell: Cell = cell) -> str:
            off, on = cell.median(cell.off, field), cell.median(cell.on, field)
            return f"{_fmt(off, digits)} / {_fmt(on, digits)}"

        lines.append(
            f"| {cell.processes} x {cell.threads} | {_fmt(cell.median(cell.off, 'throughput'))}"
            f" | {_fmt(cell.median(cell.on, 'throughput'))} | {_fmt(cell.ratio, 3)}"
            f" | {pair('worker_cpu_ms', 2)} | {pair('server_cpu_ms', 2)} | {pair('enqueue_rate')} |"
        )
    lines += ["", "Every run (tasks/s), in order: " + "; ".join(_runs(cell) for cell in cells)]
    if parts is not None:
        lines += [
            "",
            f"Breakdown (in process, {parts.tasks} tasks, 8 threads): {parts.events_per_task:.1f} events"
            f" per task in batches of {parts.mean_batch:.0f} on average; the publishing thread spent"
            f" {parts.send_ms_per_task:.3f} ms of CPU per task; one `publish()` costs its caller"
            f" {parts.publish_us:.1f} µs.",
        ]
    return "\n".join(lines) + "\n"


def _runs(cell: Cell) -> str:
    off = ", ".join(f"{run.throughput:.0f}" for run in cell.off)
    on = ", ".join(f"{run.throughput:.0f}" for run in cell.on)
    return f"{cell.processes} x {cell.threads} off {off} / on {on}"


def figures(cells: list[Cell]) -> list[Figure]:
    """Throughput with events published over throughput with them off, per configuration."""
    found = []
    for cell in cells:
        on, off = cell.median(cell.on, "throughput"), cell.median(cell.off, "throughput")
        if on is None or off is None or cell.ratio is None:
            continue
        found.append(
            Figure(
                "live events overhead",
                f"{cell.processes} x {cell.threads}, zero-latency agent, 5 events per task",
                rate(on),
                f"events off {rate(off)}: ratio {cell.ratio:.2f}",
                "(information: a real model call takes seconds)",
                None,
            )
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.events")
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL))
    args = parser.parse_args(argv)
    tasks = args.tasks or (300 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    cells = run(tasks, repeats, redis_url=args.redis_url, pg_admin_url=args.pg_admin_url)
    parts = breakdown(max(tasks, 1000), redis_url=args.redis_url)
    report = render(cells, tasks, repeats, parts)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
