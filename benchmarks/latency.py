"""Start latency (enqueue → running) and idle worker CPU: the pipeline next to bare Dramatiq.

    python -m benchmarks.latency [--steady 200] [--sparse 15]

One worker process (8 threads) at a time, on the same Redis and machine:

* **pipeline** — ``dramatiq actors`` (the lane broker's blocking fetch, the full middleware
  stack, Postgres store, scripted provider); latency = ``started_at - queued_at`` of each
  task (the claim's and the enqueue's timestamps, both written on this machine).
* **bare** — ``dramatiq benchmarks.bare_actors`` (Dramatiq's own polling Redis consumer);
  latency = when the actor began minus the producer's send time.

Patterns: ``--steady`` tasks one every 50 ms, then ``--sparse`` tasks one every 1.5 s.
Idle CPU: the worker's process tree over 10 s with nothing to do, as % of one core.
Targets (issue #9): p50 ≤ 5 ms and p99 ≤ 25 ms in both patterns; idle CPU ≤ 2 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

from benchmarks.pipeline import _all_procs, _tree_cpu, run_worker
from benchmarks.summary import Figure
from taskstore import NewAgent, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.services import temporary_database

REDIS_URL = "redis://127.0.0.1:6379/13"
ORG = "1a7e0000-0000-4000-8000-000000000000"
OUTPUT = Path(__file__).resolve().parent / "results" / "latency-latest.md"


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return statistics.median(ordered), cuts[94], cuts[98]


def idle_cpu_percent(pid: int, seconds: float = 10.0) -> float:
    before = sum(_tree_cpu(pid, _all_procs()).values())
    time.sleep(seconds)
    after = sum(_tree_cpu(pid, _all_procs()).values())
    return (after - before) / seconds * 100


def paced(count: int, interval_s: float, send: Callable[[], object]) -> None:
    start = time.perf_counter()
    for n in range(count):
        send()
        delay = start + (n + 1) * interval_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def wait_ready(log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while "Worker process is ready for action." not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {log}")
        time.sleep(0.05)
    time.sleep(1.0)  # let every consumer thread reach its first fetch


def measure_pipeline(
    env: dict[str, str], url: str, logs: Path, steady: int, sparse: int
) -> dict[str, object]:
    from actors import agent_task_queue, runtime

    agent = runtime.store.create_agent(
        NewAgent(provider="scripted", model="scripted-1", organization_id=ORG, name="latency"), now=utcnow()
    )
    log = logs / "pipeline.log"
    results: dict[str, object] = {}
    with run_worker("actors", 1, 8, env, log) as worker:
        wait_ready(log)
        results["idle_cpu"] = idle_cpu_percent(worker.proc.pid)
        for name, count, interval in (("steady", steady, 0.05), ("sparse", sparse, 1.5)):
            ids: list[str] = []

            def send(ids: list[str] = ids) -> None:
                task = agent_task_queue.create_task(agent_id=agent.id, organization_id=ORG, title="t")
                agent_task_queue.add_task(task.id)
                ids.append(task.id)

            paced(count, interval, send)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with psycopg.connect(url) as conn:
                    rows = conn.execute(
                        "SELECT extract(epoch FROM started_at - queued_at) * 1000 FROM ai_agent_tasks"
                        " WHERE id = ANY(%s) AND started_at IS NOT NULL",
                        (ids,),
                    ).fetchall()
                if len(rows) == len(ids):
                    break
                time.sleep(0.2)
            results[name] = percentiles([float(row[0]) for row in rows])
    runtime.store.close()
    return results


def measure_bare(env: dict[str, str], logs: Path, steady: int, sparse: int) -> dict[str, object]:
    from benchmarks import bare_actors

    client = redis.Redis.from_url(REDIS_URL)
    log = logs / "bare.log"
    results: dict[str, object] = {}
    with run_worker("benchmarks.bare_actors", 1, 8, env, log) as worker:
        wait_ready(log)
        results["idle_cpu"] = idle_cpu_percent(worker.proc.pid)
        for name, count, interval in (("steady", steady, 0.05), ("sparse", sparse, 1.5)):
            client.delete(bare_actors.LATENCY_KEY)
            paced(count, interval, lambda: bare_actors.stamp.send(time.time()))
            deadline = time.monotonic() + 60
            while client.llen(bare_actors.LATENCY_KEY) < count and time.monotonic() < deadline:
                time.sleep(0.2)
            results[name] = percentiles([float(v) for v in client.lrange(bare_actors.LATENCY_KEY, 0, -1)])
    return results


def render(pipeline: dict[str, object], bare: dict[str, object], steady: int, sparse: int) -> str:
    def row(label: str, key: str) -> str:
        p = pipeline[key]
        b = bare[key]
        assert isinstance(p, tuple) and isinstance(b, tuple)
        return f"| {label} | {p[0]:.1f} / {p[1]:.1f} / {p[2]:.1f} | {b[0]:.1f} / {b[1]:.1f} / {b[2]:.1f} |"

    lines = [
        "# Start latency and idle CPU: pipeline vs bare Dramatiq",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; nproc={os.cpu_count()}; 1 process x 8 threads",
        f"- steady: {steady} tasks, one every 50 ms; sparse: {sparse} tasks, one every 1.5 s",
        "",
        "| pattern | pipeline p50 / p95 / p99 ms | bare Dramatiq p50 / p95 / p99 ms |",
        "|---|---:|---:|",
        row("steady (50 ms)", "steady"),
        row("sparse (1.5 s)", "sparse"),
        f"| idle worker CPU, % of a core | {pipeline['idle_cpu']:.2f} | {bare['idle_cpu']:.2f} |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency")
    parser.add_argument("--steady", type=int, default=200)
    parser.add_argument("--sparse", type=int, default=15)
    args = parser.parse_args(argv)
    pipeline, bare = run(args.steady, args.sparse)
    table = render(pipeline, bare, args.steady, args.sparse)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(table, encoding="utf-8")
    print(table)
    return 0


def run(steady: int, sparse: int) -> tuple[dict[str, object], dict[str, object]]:
    """Latency percentiles and idle CPU of the pipeline and of bare Dramatiq, one after the other."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    with temporary_database() as url, tempfile.TemporaryDirectory(prefix="agentq-latency-") as tmp:
        PostgresTaskStore(url).migrate()
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "BENCH_REDIS_URL": REDIS_URL,
            "AGENTQ_RATE_LIMIT_MAX": "0",
            "AGENTQ_ALLOW_SCRIPTED": "true",
            "QUEUE_CONCURRENCY": "8",
        }
        os.environ.update(env)  # an entry point: the producer's runtime reads the same settings
        pipeline = measure_pipeline(env, url, Path(tmp), steady, sparse)
        bare = measure_bare(env, Path(tmp), steady, sparse)
    return pipeline, bare


def figures(pipeline: dict[str, object], bare: dict[str, object]) -> list[Figure]:
    """p50 and p99 start latency per pattern (targets 5 and 25 ms) and idle CPU (target 2 %)."""
    found = []
    for key, label in (("steady", "one task every 50 ms"), ("sparse", "one task every 1.5 s")):
        mine, theirs = pipeline[key], bare[key]
        assert isinstance(mine, tuple) and isinstance(theirs, tuple)
        found.append(
            Figure(
                "start latency",
                label,
                f"p50 {mine[0]:.1f} / p95 {mine[1]:.1f} / p99 {mine[2]:.1f} ms",
                f"bare Dramatiq p50 {theirs[0]:.1f} / p99 {theirs[2]:.1f} ms",
                "p50 ≤ 5 ms, p99 ≤ 25 ms",
                mine[0] <= 5 and mine[2] <= 25,
            )
        )
    idle, idle_bare = pipeline["idle_cpu"], bare["idle_cpu"]
    assert isinstance(idle, float) and isinstance(idle_bare, float)
    found.append(
        Figure(
            "idle worker CPU",
            "1 process x 8 threads, 10 s idle",
            f"{idle:.2f} % of a core",
            f"bare Dramatiq {idle_bare:.2f} %",
            "≤ 2 %",
            idle <= 2,
        )
    )
    return found


if __name__ == "__main__":
    sys.exit(main())
