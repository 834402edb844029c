"""I/O-bound agents: throughput against the ideal when every model call takes a fixed time.

    python -m benchmarks.io_bound [--quick] [--py-spy DIR]

A fast fake OpenAI server (:mod:`tests.fakes.fast_openai_server`: asyncio, in its own
process) answers every Chat Completions call after a fixed delay; agents with
``provider=openai`` reach it through the real SDK. First the server's own ceiling is
measured with plain HTTP clients (one keep-alive ``http.client`` connection per thread) at
64, 256 and 512 requests in flight, so the reader knows the server is not the limit. Then,
for each case, one ``dramatiq actors`` worker (one worker process) runs with as many threads
as concurrent tasks: 2,000 tasks at 200 ms with 8, 64 and 256 threads, and 5,000 tasks at
1 s with 512 (``--quick``: 400-1,000 tasks). All tasks are queued before the worker starts,
behind one warm-up task per thread: a process's first model call imports the SDK (a second
or more, during which every thread waits), once per process, so the warm-up round is
reported on its own and left out of the throughput. Throughput is measured tasks / (their
last ``completed_at`` - their first ``started_at``).

Reported per case: the warm-up round's duration (ideal: one latency); tasks/s, the ideal
(threads / latency) and their ratio; the peak RSS of the largest process of the worker's
tree (the target is per process) and of the whole tree (dramatiq's main process + the worker
process); the worker tree's CPU per task (after the warm-up round) and the one-core limit it
implies (1000 / CPU ms per task: Python code holds the GIL, so one process runs little more
than one core's worth); the most model calls the server saw waiting at once; connections the
server accepted; the most Postgres connections the worker held. Targets (issue #9): ratio
≥ 0.9 at 64, 256 and 512 x 1 s; RSS ≤ 250 MB per process.

It uses Redis db 11 (``--redis-url`` / ``BENCH_REDIS_URL``, flushed before every case) and a
fresh Postgres database that it creates and drops. ``--py-spy DIR`` records a raw py-spy
profile of the worker tree per case into ``DIR``, sampling only the thread holding the GIL
(``py-spy`` must be on ``PATH`` or in the virtualenv). The markdown is printed and written
to ``benchmarks/results/io-bound-latest.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

from benchmarks.pipeline import Worker, _all_procs, _proc_stat, _tree_cpu, run_worker
from benchmarks.summary import Figure
from taskstore import NewAgent, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.fakes.fast_openai_server import FastOpenAIServer
from tests.services import temporary_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "io-bound-latest.md"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
ORG = "10b00000-0000-4000-8000-000000000000"
#: (tasks, model latency in seconds, worker threads).
CASES = ((2000, 0.2, 8), (2000, 0.2, 64), (2000, 0.2, 256), (5000, 1.0, 512))
QUICK = ((400, 0.2, 8), (400, 0.2, 64), (600, 0.2, 256), (1000, 1.0, 512))
#: (requests in flight, delay in seconds, requests per client) of the server-ceiling measurement.
CEILING = ((64, 0.2, 10), (256, 0.2, 10), (512, 1.0, 3))
POLL_S = 0.2
#: Titles of the warm-up tasks (one per thread, first in the queue) and of the measured ones.
WARM_UP, MEASURED = "warm-up", "io"
#: A request body of about the size the worker sends (a system prompt and one user message).
_REQUEST = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "x" * 200}, {"role": "user", "content": "io"}],
    }
).encode()


# --- the fake server's own ceiling --------------------------------------------------


def _cpu_s(pid: int) -> float:
    stat = _proc_stat(pid)
    return stat.cpu_s if stat is not None else 0.0


def _client_loop(port: int, requests: int, barrier: threading.Barrier, errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        barrier.wait()
        for _ in range(requests):
            conn.request(
                "POST", "/v1/chat/completions", body=_REQUEST, headers={"content-type": "application/json"}
            )
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or b'"chat.completion"' not in body:
                errors.append(f"HTTP {response.status}")
    except (OSError, threading.BrokenBarrierError) as exc:
        errors.append(repr(exc))
    finally:
        conn.close()


def server_ceiling() -> list[dict[str, Any]]:
    """Requests/s of the fake server with plain concurrent clients, against ``in flight / delay``."""
    rows = []
    for in_flight, delay, per_client in CEILING:
        with FastOpenAIServer(delay_s=delay) as server:
            port = int(server.url.rsplit(":", 1)[1])
            barrier = threading.Barrier(in_flight + 1, timeout=60)
            errors: list[str] = []
            threads = [
                threading.Thread(target=_client_loop, args=(port, per_client, barrier, errors), daemon=True)
                for _ in range(in_flight)
            ]
            for thread in threads:
                thread.start()
            cpu_before = _cpu_s(server.pid)
            barrier.wait()
            started = time.monotonic()
            for thread in threads:
                thread.join(timeout=60 + per_client * delay * 4)
            elapsed = time.monotonic() - started
            cpu_ms = (_cpu_s(server.pid) - cpu_before) * 1000
            stats = server.stats()
        if errors:
            raise RuntimeError(f"{len(errors)} ceiling requests failed, e.g. {errors[0]}")
        total = in_flight * per_client
        ideal = in_flight / delay
        rows.append(
            {
                "in_flight": in_flight,
                "delay_ms": round(delay * 1000),
                "requests": total,
                "requests_per_s": total / elapsed,
                "ideal": ideal,
                "ratio": total / elapsed / ideal,
                "server_max_in_flight": stats.max_in_flight,
                "server_cpu_ms_per_request": cpu_ms / total,
            }
        )
        print(_ceiling_line(rows[-1]), flush=True)
    return rows


# --- the worker ---------------------------------------------------------------------


def rss_by_pid(root: int) -> dict[int, float]:
    """Resident memory (MB) of ``root`` and each of its descendants."""
    found: dict[int, float] = {}
    for pid in _tree_cpu(root, _all_procs()):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[pid] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return found


@contextlib.contextmanager
def _py_spy(pid: int, output: Path | None) -> Iterator[None]:
    """Record a raw py-spy profile of ``pid`` and its children while the block runs (if ``output``)."""
    if output is None:
        yield
        return
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [exe, "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--gil", "-f", "raw"]
    proc = subprocess.Popen(
        [*command, "-o", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class _Watch:
    """What the harness saw while a worker drained its queue."""

    peak_process_mb: float = 0.0
    peak_tree_mb: float = 0.0
    peak_pg_connections: int = 0
    #: (tasks completed, worker-tree CPU seconds) at each poll after the warm-up round.
    cpu: list[tuple[int, float]] = field(default_factory=list)

    def cpu_ms_per_task(self) -> float | None:
        (done_0, cpu_0), (done_1, cpu_1) = self.cpu[0], self.cpu[-1]
        return (cpu_1 - cpu_0) * 1000 / (done_1 - done_0) if done_1 > done_0 else None


def _watch(
    worker: Worker, poll: psycopg.Connection[Any], warm_up: int, total: int, timeout_s: float
) -> _Watch:
    """Poll until ``total`` tasks completed; fail on a failed task, a dead worker or the deadline."""
    seen = _Watch()
    deadline = time.monotonic() + timeout_s
    while True:
        rss = rss_by_pid(worker.proc.pid)
        seen.peak_process_mb = max(seen.peak_process_mb, *rss.values(), 0.0)
        seen.peak_tree_mb = max(seen.peak_tree_mb, sum(rss.values()))
        row = poll.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed'),"
            " count(*) FILTER (WHERE status = 'failed'),"
            " (SELECT count(*) FROM pg_stat_activity"
            "   WHERE datname = current_database() AND pid <> pg_backend_pid())"
            " FROM ai_agent_tasks"
        ).fetchone()
        assert row is not None
        done, failed, connections = int(row[0]), int(row[1]), int(row[2])
        seen.peak_pg_connections = max(seen.peak_pg_connections, connections)
        if failed:
            raise RuntimeError(f"{failed} tasks failed; see {worker.log_path}")
        if done >= warm_up:
            seen.cpu.append((done, sum(_tree_cpu(worker.proc.pid, _all_procs()).values())))
        if done == total:
            return seen
        if worker.proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.proc.returncode}; see {worker.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{done}/{total} completed before the deadline; see {worker.log_path}")
        time.sleep(POLL_S)


def run_case(
    url: str,
    redis_url: str,
    env: dict[str, str],
    logs: Path,
    case: tuple[int, float, int],
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """One worker with ``threads`` threads drains ``tasks`` tasks whose model call takes ``latency`` s."""
    from actors import agent_task_queue, runtime

    tasks, latency, threads = case
    redis.Redis.from_url(redis_url).flushdb()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE ai_agent_task_steps, ai_agent_task_runs, ai_agent_tasks")
    with FastOpenAIServer(delay_s=latency) as server, psycopg.connect(url, autocommit=True) as poll:
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
        for title in [WARM_UP] * threads + [MEASURED] * tasks:
            task = agent_task_queue.create_task(agent_id=agent.id, organization_id=ORG, title=title)
            agent_task_queue.add_task(task.id)
        worker_env = {
            **env,
            "OPENAI_API_KEY": "sk-bench",
            "QUEUE_CONCURRENCY": str(threads),
            "AGENTQ_ALLOWED_BASE_URLS": server.base_url,  # the agent's own base_url
        }
        profile = profile_dir / f"io-{threads}.txt" if profile_dir is not None else None
        with (
            run_worker("actors", 1, threads, worker_env, logs / f"io-{threads}.log") as worker,
            _py_spy(worker.proc.pid, profile),
        ):
            seen = _watch(worker, poll, threads, threads + tasks, tasks * latency / threads * 4 + 60)
        window = {
            str(title): (first, last)
            for title, first, last in poll.execute(
                "SELECT title, min(started_at), max(completed_at) FROM ai_agent_tasks GROUP BY title"
            ).fetchall()
        }
        stats = server.stats()
    warm_first, warm_last = window[WARM_UP]
    first, last = window[MEASURED]
    throughput = tasks / (last - first).total_seconds()
    ideal = threads / latency
    cpu_ms = seen.cpu_ms_per_task()
    row: dict[str, Any] = {
        "case": f"{tasks} at {latency * 1000:.0f} ms",
        "threads": threads,
        "warm_up_s": (warm_last - warm_first).total_seconds(),
        "tasks_per_s": throughput,
        "ideal": ideal,
        "ratio": throughput / ideal,
        "peak_rss_mb": seen.peak_process_mb,
        "peak_tree_rss_mb": seen.peak_tree_mb,
        "cpu_ms_per_task": cpu_ms,
        "one_core_limit": 1000 / cpu_ms if cpu_ms else None,
        "server_max_in_flight": stats.max_in_flight,
        "server_connections": stats.connections,
        "max_pg_connections": seen.peak_pg_connections,
    }
    print(_case_line(row), flush=True)
    return row


def run(
    quick: bool, *, redis_url: str = DEFAULT_REDIS_URL, profile_dir: Path | None = None
) -> list[dict[str, Any]]:
    """Run every case (``quick``: fewer tasks) and return one row per case.

    Each row has ``case``, ``threads``, ``tasks_per_s``, ``ideal``, ``ratio`` and
    ``peak_rss_mb`` (the largest process of the worker's tree), plus the diagnostics of the
    module docstring (``cpu_ms_per_task``, ``server_max_in_flight``, ...).
    """
    with temporary_database() as url, tempfile.TemporaryDirectory(prefix="agentq-io-") as tmp:
        PostgresTaskStore(url).migrate()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "AGENTQ_RATE_LIMIT_MAX": "0",
        }
        os.environ.update(env)  # an entry point: the producer's runtime reads the same settings
        return [
            run_case(url, redis_url, env, Path(tmp), case, profile_dir)
            for case in (QUICK if quick else CASES)
        ]


# --- output -------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ceiling_line(row: dict[str, Any]) -> str:
    return (
        f"| {row['in_flight']} | {row['delay_ms']} | {row['requests']} | {row['requests_per_s']:.0f} |"
        f" {row['ideal']:.0f} | {row['ratio']:.2f} | {row['server_max_in_flight']} |"
        f" {row['server_cpu_ms_per_request']:.3f} |"
    )


def _case_line(row: dict[str, Any]) -> str:
    return (
        f"| {row['case']} | {row['threads']} | {row['warm_up_s']:.2f} | {row['tasks_per_s']:.1f} |"
        f" {row['ideal']:.0f} | {row['ratio']:.2f} |"
        f" {row['peak_rss_mb']:.0f} | {row['peak_tree_rss_mb']:.0f} | {_fmt(row['cpu_ms_per_task'], 2)} |"
        f" {_fmt(row['one_core_limit'], 0)} | {row['server_max_in_flight']} | {row['server_connections']} |"
        f" {row['max_pg_connections']} |"
    )


def render(ceiling: list[dict[str, Any]], rows: list[dict[str, Any]], quick: bool) -> str:
    """The results file."""
    flag = " --quick" if quick else ""
    lines = [
        f"# I/O-bound agents{' (quick run)' if quick else ''}: `python -m benchmarks.io_bound{flag}`",
        "",
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}.",
        "Every Chat Completions call is answered after a fixed delay by `tests/fakes/fast_openai_server.py`",
        "(asyncio, its own process) and made through the real `openai` SDK. Targets (issue #9): ratio ≥ 0.9",
        "at 64, 256 and 512 x 1 s; RSS ≤ 250 MB per process. Each case first runs one warm-up task per",
        "thread (a process's first model call imports the SDK while the other threads wait); that round",
        "is shown on its own and left out of tasks/s.",
        "",
        "## The fake server's own ceiling",
        "",
        "Plain clients (one keep-alive `http.client` connection per thread, in the benchmark's process):",
        "",
        "| in flight | delay ms | requests | requests/s | ideal | ratio | server max in flight"
        " | server CPU ms/request |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_ceiling_line(row) for row in ceiling),
        "",
        "## The worker: one `dramatiq actors` process, threads = concurrent tasks",
        "",
        "| tasks | threads | warm-up round s | tasks/s | ideal | ratio | peak RSS MB (largest process)"
        " | peak RSS MB (tree) | worker CPU ms/task | one-core limit tasks/s | server max in flight"
        " | server connections | max Postgres connections |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_case_line(row) for row in rows),
        "",
        "*one-core limit* = 1000 / worker CPU ms per task: the most tasks/s one core can do at that cost.",
        "Python code in one process holds the GIL, so where the ideal is above this limit the process is",
        "CPU-bound, not waiting: more threads cannot reach the ideal; more processes (and cores) can.",
        "See `benchmarks/README.md` for the analysis.",
        "",
    ]
    return "\n".join(lines)


def figures(rows: list[dict[str, Any]]) -> list[Figure]:
    """Throughput over ideal per case (target 0.9 from 64 threads up) and peak RSS (target 250 MB)."""
    found = []
    for row in rows:
        targeted = row["threads"] >= 64
        found.append(
            Figure(
                "I/O-bound agents",
                f"{row['case']}, {row['threads']} threads",
                f"{row['tasks_per_s']:,.0f} tasks/s, ratio {row['ratio']:.2f};"
                f" peak RSS {row['peak_rss_mb']:.0f} MB",
                f"ideal {row['ideal']:,.0f} tasks/s (threads ÷ latency)",
                "ratio ≥ 0.9, RSS ≤ 250 MB" if targeted else "RSS ≤ 250 MB",
                (row["ratio"] >= 0.9 or not targeted) and row["peak_rss_mb"] <= 250,
            )
        )
    return found


def main(argv: list[str] | None = None) -> int:
    """The command line: measure, print and write the results file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.io_bound")
    parser.add_argument("--quick", action="store_true", help="fewer tasks per case (a few minutes)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--py-spy", type=Path, default=None, metavar="DIR", help="record a py-spy profile per case"
    )
    args = parser.parse_args(argv)
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    print(
        "| in flight | delay ms | requests | requests/s | ideal | ratio | max in flight | CPU ms/req |",
        flush=True,
    )
    ceiling = server_ceiling()
    rows = run(args.quick, redis_url=args.redis_url, profile_dir=args.py_spy)
    text = render(ceiling, rows, args.quick)
    args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
