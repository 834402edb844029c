"""I/O-bound agents: one worker process with 1,000 runs in flight, against the floor.

    python -m benchmarks.io_bound [--quick] [--repeats N] [--threads N] [--redis-url URL] [--py-spy DIR]

A fast fake OpenAI server (:mod:`tests.fakes.fast_openai_server`: asyncio, in its own
process) answers every Chat Completions call after a fixed delay; agents with
``provider=openai`` reach it through the real SDK. First the server's own ceiling is
measured with plain HTTP clients (one keep-alive ``http.client`` connection per thread) at
64, 256 and 1,000 requests in flight, so the reader knows the server is not the limit.

Then each case (2,000 runs of 5 s and 5,000 runs of 1 s, 1,000 in flight; ``--quick``: 1,000
runs of 2 s and 2,000 of 0.5 s, 500 in flight) runs ``--repeats`` times (default 3, ``--quick``
1), and each repeat runs, one after the other, each against a fresh server with the case's delay:

* **the floor** (:mod:`benchmarks.io_floor`): a bare asyncio loop in its own process making the
  same SDK calls (``AsyncOpenAI``, one client per 32 calls in flight, ``--floor-clients`` to
  change it) at the same concurrency, no queue at all: the best any queue could do in Python on
  this machine;
* **the worker**: one ``dramatiq actors -p 1 -t 8`` process tree (``--threads``) with
  ``QUEUE_CONCURRENCY`` = the case's runs in flight.

Both first run one round of warm-up calls (as many as the concurrency: the worker's first
model calls import the SDK and open the connections) and then the measured ones, from one
queue. Throughput = measured calls / (their last end - their first start) (the worker: the
tasks' ``started_at`` and ``completed_at``); CPU per model call = the process's (the
worker's: its process tree's) CPU after the warm-up count had completed / calls completed
since; peak RSS = the largest process's high-water mark (``VmHWM``; the floor:
``ru_maxrss``). Targets (issue #19): worker ≥ 0.8 of the floor's throughput, peak RSS ≤ 300 MB
per process at 1,000 in flight, worker CPU per model call ≤ 1.5 x the floor's.

Before the asyncio runtime each run in flight held a worker thread: ``--threads`` equal to the
concurrency runs that code (``-t 8`` would take hours there; the worker's deadline stops it).

It uses Redis db 11 (``--redis-url`` / ``BENCH_REDIS_URL``, flushed before every worker run)
and a fresh Postgres database that it creates and drops. ``--py-spy DIR`` records a raw py-spy
profile of the worker tree per worker run into ``DIR``, sampling only the thread holding the
GIL (``py-spy`` must be on ``PATH`` or in the virtualenv). The markdown
(:func:`benchmarks.io_results.render`) is printed and written to
``benchmarks/results/io-bound-latest.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from benchmarks import io_floor
from benchmarks.io_floor import FloorResult
from benchmarks.io_results import Case, CaseResult, WorkerRun, ceiling_line, floor_text, render, worker_text
from benchmarks.pipeline import Worker, _all_procs, _proc_stat, _tree_cpu, run_worker
from taskstore import NewAgent, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.fakes.fast_openai_server import FastOpenAIServer
from tests.services import temporary_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "io-bound-latest.md"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
ORG = "10b00000-0000-4000-8000-000000000000"
#: Worker threads (``dramatiq actors -t``): with the asyncio runtime they only do the short
#: database and Redis work.
THREADS = 8
#: (requests in flight, delay in seconds, requests per client) of the server-ceiling measurement.
CEILING = ((64, 0.2, 10), (256, 0.2, 10), (1000, 1.0, 3))
POLL_S = 0.2
#: Tasks created and queued per store call and Redis transaction (the batch API's limit).
BATCH = 1000
#: Titles of the warm-up tasks (first in the queue) and of the measured ones (what the floor sends).
WARM_UP, MEASURED = "warm-up", io_floor.TITLE
#: A request body of about the size the worker sends (a system prompt and one user message).
_REQUEST = json.dumps(
    {
        "model": io_floor.MODEL,
        "messages": [
            {"role": "system", "content": io_floor.SYSTEM_PROMPT},
            {"role": "user", "content": io_floor.TITLE},
        ],
    }
).encode()


CASES = (Case(2000, 5.0, 1000), Case(5000, 1.0, 1000))
QUICK = (Case(1000, 2.0, 500), Case(2000, 0.5, 500))


# --- the fake server's own ceiling --------------------------------------------------


def _cpu_s(pid: int) -> float:
    stat = _proc_stat(pid)
    return stat.cpu_s if stat is not None else 0.0


def _client_loop(port: int, requests: int, barrier: threading.Barrier, errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
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
        print(ceiling_line(rows[-1]), flush=True)
    return rows


# --- the worker ---------------------------------------------------------------------


def memory_by_pid(root: int) -> dict[int, tuple[float, float]]:
    """Resident memory now and its high-water mark (MB) of ``root`` and each of its descendants."""
    found: dict[int, tuple[float, float]] = {}
    for pid in _tree_cpu(root, _all_procs()):
        try:
            fields = dict(
                line.split(":", 1)
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ":" in line
            )
            found[pid] = (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)
        except (OSError, KeyError, ValueError):
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
    #: (tasks completed, worker-tree CPU seconds) at each poll after the warm-up count completed.
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
        memory = memory_by_pid(worker.proc.pid)
        seen.peak_process_mb = max(seen.peak_process_mb, *(hwm for _, hwm in memory.values()), 0.0)
        seen.peak_tree_mb = max(seen.peak_tree_mb, sum(rss for rss, _ in memory.values()))
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
            raise RuntimeError(
                f"{done}/{total} completed within {timeout_s:.0f} s; see {worker.log_path}"
                " (runs held a thread each before the asyncio runtime: --threads = the concurrency)"
            )
        time.sleep(POLL_S)


def _enqueue(agent_id: str, titles: Sequence[str]) -> None:
    """Create and queue one task per title, in order, in batches."""
    from actors import agent_task_queue

    for start in range(0, len(titles), BATCH):
        batch = [
            {"agent_id": agent_id, "organization_id": ORG, "title": title}
            for title in titles[start : start + BATCH]
        ]
        tasks = agent_task_queue.create_tasks(batch)
        agent_task_queue.add_tasks([task.id for task in tasks])


def run_worker_case(
    url: str,
    redis_url: str,
    env: dict[str, str],
    log_path: Path,
    case: Case,
    threads: int,
    timeout_s: float,
    profile: Path | None = None,
) -> WorkerRun:
    """One ``dramatiq actors -p 1 -t threads`` worker drains the case's warm-up round and its tasks."""
    from actors import runtime

    redis.Redis.from_url(redis_url).flushdb()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE ai_agent_task_steps, ai_agent_task_runs, ai_agent_tasks, ai_agents CASCADE")
    with FastOpenAIServer(delay_s=case.latency_s) as server, psycopg.connect(url, autocommit=True) as poll:
        agent = runtime.store.create_agent(
            NewAgent(
                organization_id=ORG,
                name="io",
                provider="openai",
                model=io_floor.MODEL,
                system_prompt=io_floor.SYSTEM_PROMPT,
                base_url=server.base_url,
            ),
            now=utcnow(),
        )
        _enqueue(agent.id, [WARM_UP] * case.concurrency + [MEASURED] * case.tasks)
        worker_env = {
            **env,
            "OPENAI_API_KEY": "sk-bench",
            "QUEUE_CONCURRENCY": str(case.concurrency),
            "AGENTQ_ALLOWED_BASE_URLS": server.base_url,  # the agent's own base_url
        }
        total = case.concurrency + case.tasks
        with (
            run_worker("actors", 1, threads, worker_env, log_path) as worker,
            _py_spy(worker.proc.pid, profile),
        ):
            seen = _watch(worker, poll, case.concurrency, total, timeout_s)
        window = {
            str(title): (first, last, p50)
            for title, first, last, p50 in poll.execute(
                "SELECT title, min(started_at), max(completed_at),"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at))"
                " FROM ai_agent_tasks GROUP BY title"
            ).fetchall()
        }
        stats = server.stats()
    warm_first, warm_last, _ = window[WARM_UP]
    first, last, run_p50 = window[MEASURED]
    return WorkerRun(
        tasks_per_s=case.tasks / (last - first).total_seconds(),
        warm_up_s=(warm_last - warm_first).total_seconds(),
        peak_rss_mb=seen.peak_process_mb,
        peak_tree_rss_mb=seen.peak_tree_mb,
        cpu_ms_per_task=seen.cpu_ms_per_task(),
        run_p50_s=float(run_p50),
        server_max_in_flight=stats.max_in_flight,
        server_connections=stats.connections,
        max_pg_connections=seen.peak_pg_connections,
    )


def run_floor(case: Case, clients: int | None) -> tuple[FloorResult, int]:
    """The floor for ``case`` against a fresh server; also the most calls that server saw at once."""
    with FastOpenAIServer(delay_s=case.latency_s) as server:
        floor = io_floor.measure(server.base_url, case.concurrency, case.tasks, clients=clients)
        return floor, server.stats().max_in_flight


# --- the cases ----------------------------------------------------------------------


def run(
    quick: bool,
    *,
    redis_url: str = DEFAULT_REDIS_URL,
    repeats: int | None = None,
    threads: int = THREADS,
    floor_clients: int | None = None,
    profile_dir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> list[CaseResult]:
    """Run every case (``quick``: the smaller ones) ``repeats`` times, floor then worker each time."""
    repeats = repeats if repeats is not None else (1 if quick else 3)
    results = [CaseResult(case, threads) for case in (QUICK if quick else CASES)]
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
        for repeat in range(repeats):
            for result in results:
                case = result.case
                floor, floor_in_flight = run_floor(case, floor_clients)
                result.floors.append(floor)
                result.floor_in_flight.append(floor_in_flight)
                progress(f"  {case.name} #{repeat + 1}: floor {floor_text(floor, floor_in_flight)}")
                slowest = min(case.ideal, floor.calls_per_s)
                timeout_s = (case.concurrency + case.tasks) / slowest * 3 + 90
                name = f"io-{case.tasks}x{case.latency_s:g}-{repeat + 1}"
                profile = profile_dir / f"{name}.txt" if profile_dir is not None else None
                worker = run_worker_case(
                    url, redis_url, env, Path(tmp) / f"{name}.log", case, threads, timeout_s, profile
                )
                result.workers.append(worker)
                progress(f"  {case.name} #{repeat + 1}: worker {worker_text(worker, floor)}")
    return results


def main(argv: list[str] | None = None) -> int:
    """The command line: measure, print and write the results file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.io_bound")
    parser.add_argument("--quick", action="store_true", help="smaller cases, one repeat (a few minutes)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="floor/worker pairs per case (default 3; quick 1)"
    )
    parser.add_argument("--threads", type=int, default=THREADS, help=f"worker threads (default {THREADS})")
    parser.add_argument(
        "--floor-clients",
        type=int,
        default=None,
        help="SDK clients of the floor (default: one per 32 in flight)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--py-spy", type=Path, default=None, metavar="DIR", help="record a py-spy profile per worker run"
    )
    args = parser.parse_args(argv)
    for name in ("repeats", "threads", "floor_clients"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        "| in flight | delay ms | requests | requests/s | ideal | ratio | max in flight | CPU ms/req |",
        flush=True,
    )
    ceiling = server_ceiling()
    results = run(
        args.quick,
        redis_url=args.redis_url,
        repeats=args.repeats,
        threads=args.threads,
        floor_clients=args.floor_clients,
        profile_dir=args.py_spy,
    )
    command = " ".join(["python -m benchmarks.io_bound", *(argv if argv is not None else sys.argv[1:])])
    text = render(ceiling, results, command, load)
    args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
