"""I/O-bound agents: throughput against the ideal when every model call takes a fixed time.

    python -m benchmarks.io_bound [--quick]

A local OpenAI-compatible server (``tests.fakes``) answers every Chat Completions call
after a fixed delay; agents with ``provider=openai`` reach it through the real SDK. For
each case one ``dramatiq actors`` process runs with as many threads as concurrent tasks:
2,000 tasks at 200 ms with 8, 64 and 256 threads, and 5,000 tasks at 1 s with 512.
Reports tasks/s, the ideal (threads / latency), their ratio, and the worker's peak RSS.
Targets (issue #9): ratio ≥ 0.9 at 64, 256 and 512 x 1 s; RSS ≤ 250 MB per process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from benchmarks.pipeline import _all_procs, _tree_cpu, run_worker
from taskstore import NewAgent, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.fakes.openai_server import FakeOpenAIServer, openai_text
from tests.services import temporary_database

REDIS_URL = "redis://127.0.0.1:6379/13"
ORG = "10b00000-0000-4000-8000-000000000000"
CASES = ((2000, 0.2, 8), (2000, 0.2, 64), (2000, 0.2, 256), (5000, 1.0, 512))
QUICK = ((400, 0.2, 8), (400, 0.2, 64), (600, 0.2, 256), (1000, 1.0, 512))


def rss_mb(root: int) -> float:
    total = 0
    for pid in _tree_cpu(root, _all_procs()):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def run_case(url: str, env: dict[str, str], logs: Path, tasks: int, latency: float, threads: int) -> str:
    from actors import agent_task_queue, runtime

    redis.Redis.from_url(REDIS_URL).flushdb()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE ai_agent_task_runs, ai_agent_tasks")
    with FakeOpenAIServer() as server:
        server.enqueue(*(openai_text("done", delay_s=latency) for _ in range(tasks)))
        agent = runtime.store.create_agent(
            NewAgent(
                organization_id=ORG,
                name="io",
                provider="openai",
                model="gpt-4o-mini",
                base_url=server.base_url,
            ),
            now=utcnow(),
        )
        for _ in range(tasks):
            task = agent_task_queue.create_task(agent_id=agent.id, organization_id=ORG, title="io")
            agent_task_queue.add_task(task.id)
        worker_env = {**env, "OPENAI_API_KEY": "sk-bench", "QUEUE_CONCURRENCY": str(threads)}
        peak = 0.0
        with run_worker("actors", 1, threads, worker_env, logs / f"io-{threads}.log") as worker:
            deadline = time.monotonic() + tasks * latency / threads * 4 + 60
            while time.monotonic() < deadline:
                peak = max(peak, rss_mb(worker.proc.pid))
                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        "SELECT count(*) FILTER (WHERE status = 'completed'),"
                        " count(*) FILTER (WHERE status = 'failed') FROM ai_agent_tasks"
                    ).fetchone()
                assert row is not None
                if row[1]:
                    raise RuntimeError(f"{row[1]} tasks failed; see {logs}")
                if row[0] == tasks:
                    break
                time.sleep(0.5)
        with psycopg.connect(url) as conn:
            first, last = conn.execute(
                "SELECT min(started_at), max(completed_at) FROM ai_agent_tasks"
            ).fetchone() or (
                None,
                None,
            )
    assert first is not None and last is not None
    throughput = tasks / (last - first).total_seconds()
    ideal = threads / latency
    ratio = throughput / ideal
    label = f"{tasks} at {latency * 1000:.0f} ms"
    return f"| {label} | {threads} | {throughput:.1f} | {ideal:.0f} | {ratio:.2f} | {peak:.0f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.io_bound")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with temporary_database() as url, tempfile.TemporaryDirectory(prefix="agentq-io-") as tmp:
        PostgresTaskStore(url).migrate()
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "AGENTQ_RATE_LIMIT_MAX": "0",
        }
        os.environ.update(env)  # an entry point: the producer's runtime reads the same settings
        lines = [
            "| tasks | threads | tasks/s | ideal | ratio | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for tasks, latency, threads in QUICK if args.quick else CASES:
            lines.append(run_case(url, env, Path(tmp), tasks, latency, threads))
            print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
