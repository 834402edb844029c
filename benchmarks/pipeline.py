"""Throughput of the full agent pipeline next to a bare Dramatiq no-op actor.

Run from the repository root::

    python -m benchmarks.pipeline            # N=2000, 3 repeats, ~3 minutes on 2 cores
    python -m benchmarks.pipeline --quick    # N=300, 1 repeat: a smoke run

For each worker configuration (1 process x 8 threads, 2 processes x 8 threads) and
each repeat, interleaved so machine noise hits both alike:

* **bare** — N messages for ``benchmarks.bare_actors.noop`` are enqueued, then
  ``dramatiq benchmarks.bare_actors`` drains them; the drain time is first to last
  completion, as the actor records them in Redis.
* **pipeline** — N tasks are created with ``agent_task_queue.create_task`` and queued
  with ``agent_task_queue.add_task`` one by one, then ``dramatiq actors`` drains them
  with the project's full middleware stack, a Postgres task store and the ``scripted``
  provider (no latency); the drain time is ``min(started_at)`` to ``max(completed_at)``.

Messages are always all enqueued before the worker starts, so worker start-up is not
in the drain time. The Redis db (``--redis-url``, db 13 by default) is flushed before
every run; the Postgres database ``agentq_bench_<random>`` is created, migrated and
dropped by the harness. Worker CPU per task is read from ``/proc`` (all processes of
the worker's tree, between the first and the last completion); the Postgres + Redis
server CPU per task is machine-wide (every ``postgres``/``redis-server`` process), so
other users of those servers inflate it.

The markdown table is printed and written to ``benchmarks/results/pipeline-latest.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import redis
from psycopg import sql

from benchmarks.summary import Figure, rate

if TYPE_CHECKING:
    from actors.task_queue import AgentTaskQueue
    from taskstore import TaskStore

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "pipeline-latest.md"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_PREFIX = "agentq_bench_"
#: (processes, threads) of the worker configurations measured.
CONFIGS: tuple[tuple[int, int], ...] = ((1, 8), (2, 8))
POLL_S = 0.1
STOP_TIMEOUT_S = 30.0
_TICKS = os.sysconf("SC_CLK_TCK")
_SERVER_COMMANDS = frozenset({"postgres", "redis-server"})
#: ``ai_agents.kind`` of the ``--lean`` runs' agent: a sync kind (``benchmarks.lean_kind``).
LEAN_KIND = "bench_sync"
#: The settings of the ``--lean`` runs: the per-task work added since runs moved to the event loop,
#: switched off through its public names (live events, the step ledger, worker presence, the cancel watch).
LEAN_ENV = {
    "AGENTQ_EVENTS_ENABLED": "false",
    "AGENTQ_STEP_LEDGER": "false",
    "AGENTQ_DISABLE_MIDDLEWARE": "presence,cancel_watch",
}


class BenchmarkError(RuntimeError):
    """A run did not complete: the worker died, a task failed or the drain missed its deadline."""


# --- CPU accounting from /proc ----------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    command: str
    ppid: int
    cpu_s: float


def _proc_stat(pid: int) -> ProcStat | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    open_paren, close_paren = data.find("("), data.rfind(")")
    fields = data[close_paren + 2 :].split()
    # After "pid (comm) ": state, ppid, ... utime is field 14 and stime field 15 of the whole line.
    return ProcStat(
        data[open_paren + 1 : close_paren], int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS
    )


def _all_procs() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    return stats


def _tree_cpu(root: int, procs: dict[int, ProcStat]) -> dict[int, float]:
    """CPU seconds of ``root`` and all its descendants, by pid."""
    children: dict[int, list[int]] = {}
    for pid, stat in procs.items():
        children.setdefault(stat.ppid, []).append(pid)
    found: dict[int, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in procs and pid not in found:
            found[pid] = procs[pid].cpu_s
            todo.extend(children.get(pid, ()))
    return found


def _server_cpu(procs: dict[int, ProcStat]) -> dict[int, float]:
    return {pid: stat.cpu_s for pid, stat in procs.items() if stat.command in _SERVER_COMMANDS}


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two snapshots; a process born in between counts from zero."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@dataclass(frozen=True)
class Sample:
    done: int
    worker: dict[int, float]
    server: dict[int, float]


# --- one run --------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    kind: str
    processes: int
    threads: int
    tasks: int
    enqueue_s: float
    drain_s: float
    #: Worker-tree CPU milliseconds per task after the first completion (None if not measurable).
    worker_cpu_ms: float | None
    #: Postgres + Redis server CPU milliseconds per task over the same window (machine-wide).
    server_cpu_ms: float | None
    stop_s: float

    @property
    def throughput(self) -> float:
        return self.tasks / self.drain_s if self.drain_s > 0 else float("inf")

    @property
    def enqueue_rate(self) -> float:
        return self.tasks / self.enqueue_s if self.enqueue_s > 0 else float("inf")


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path
    stop_s: float = 0.0


@contextlib.contextmanager
def run_worker(
    modules: str, processes: int, threads: int, env: dict[str, str], log_path: Path
) -> Iterator[Worker]:
    """``dramatiq <modules>`` (space-separated) as a subprocess, output in ``log_path``; SIGTERM'd on exit."""
    command = [
        sys.executable,
        "-m",
        "dramatiq",
        *modules.split(),
        "--processes",
        str(processes),
        "--threads",
        str(threads),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = Worker(proc, log_path)
    try:
        yield worker
    finally:
        worker.stop_s = _stop(proc)


@contextlib.contextmanager
def run_processes(
    command: list[str], processes: int, env: dict[str, str], log_path: Path
) -> Iterator[Worker]:
    """``processes`` copies of ``command`` under one shell (one process tree), SIGTERM'd on exit."""
    script = " & ".join([subprocess.list2cmdline(command)] * processes) + " & wait"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", f"trap 'kill -TERM 0' TERM; {script}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(proc, log_path)
    try:
        yield worker
    finally:
        worker.stop_s = _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM the worker and wait for it; SIGKILL its process group after ``STOP_TIMEOUT_S``."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(
                f"  ! worker {proc.pid} ignored SIGTERM for {STOP_TIMEOUT_S:g} s; killing it", file=sys.stderr
            )
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return time.monotonic() - started


def _drain(
    worker: Worker, tasks: int, progress: Callable[[], int], timeout_s: float
) -> tuple[Sample, Sample]:
    """Poll until ``progress()`` reaches ``tasks``; the CPU samples at the first completion and at the end."""
    deadline = time.monotonic() + timeout_s
    first: Sample | None = None
    while True:
        done = progress()
        procs = _all_procs()
        sample = Sample(done, _tree_cpu(worker.proc.pid, procs), _server_cpu(procs))
        if first is None and done > 0:
            first = sample
        if done >= tasks:
            return first or sample, sample
        code = worker.proc.poll()
        if code is not None:
            raise BenchmarkError(
                f"worker exited with code {code} after {done}/{tasks} tasks; see {worker.log_path}"
            )
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"not drained: {done}/{tasks} tasks done after {timeout_s:g} s; see {worker.log_path}"
            )
        time.sleep(POLL_S)


def _per_task_ms(first: Sample, last: Sample, tasks: int) -> tuple[float | None, float | None]:
    counted = last.done - first.done
    if counted < max(10, tasks // 10):
        return None, None
    worker = _cpu_delta(first.worker, last.worker) * 1000 / counted
    server = _cpu_delta(first.server, last.server) * 1000 / counted
    return worker, server


def _deadline_s(tasks: int) -> float:
    return 60.0 + tasks * 0.05


@dataclass
class Bench:
    """What every run shares: the Redis client, the project's queue and store, the env of workers."""

    redis_client: redis.Redis
    database_url: str
    queue: AgentTaskQueue
    store: TaskStore
    agent_id: str
    organization_id: str
    env: dict[str, str]
    log_dir: Path
    #: The agent of ``--lean`` runs (a sync kind, ``benchmarks.lean_kind``); None without ``--lean``.
    lean_agent_id: str | None = None
    runs: list[RunResult] = field(default_factory=list)
    _serial: int = 0

    def log_path(self, kind: str, processes: int, threads: int) -> Path:
        self._serial += 1
        return self.log_dir / f"{self._serial:02d}-{kind}-{processes}x{threads}.log"

    def run_bare(self, processes: int, threads: int, tasks: int) -> RunResult:
        # Imported here: the module builds its broker from BENCH_REDIS_URL, which main() sets.
        from benchmarks import bare_actors

        self.redis_client.flushdb()
        started = time.perf_counter()
        for _ in range(tasks):
            bare_actors.noop.send()
        enqueue_s = time.perf_counter() - started

        def progress() -> int:
            return int(self.redis_client.get(bare_actors.DONE_KEY) or 0)

        log = self.log_path("bare", processes, threads)
        with run_worker("benchmarks.bare_actors", processes, threads, self.env, log) as worker:
            first, last = _drain(worker, tasks, progress, _deadline_s(tasks))
        raw_first, raw_last = self.redis_client.mget(bare_actors.FIRST_KEY, bare_actors.LAST_KEY)
        if raw_first is None or raw_last is None:
            raise BenchmarkError("the bare actor recorded no completion times")
        # First to last completion spans tasks - 1 completions: scale so the rate is per task.
        drain_s = (float(raw_last) - float(raw_first)) * tasks / max(tasks - 1, 1)
        worker_ms, server_ms = _per_task_ms(first, last, tasks)
        return self._record(
            "bare", processes, threads, tasks, enqueue_s, drain_s, worker_ms, server_ms, worker
        )

    def run_pipeline(
        self,
        processes: int,
        threads: int,
        tasks: int,
        *,
        group_commit: bool = True,
        step_ledger: bool = True,
        lean: bool = False,
    ) -> RunResult:
        """The full pipeline; ``group_commit=False`` writes every claim and completion alone,
        ``step_ledger=False`` records no steps (``AGENTQ_STEP_LEDGER=false``), ``lean`` runs a sync kind
        with the per-task features of :data:`LEAN_ENV` off."""
        kind = "pipeline" if group_commit else "pipeline-solo"
        kind = kind if step_ledger else "pipeline-no-ledger"
        env = {
            **self.env,
            "AGENTQ_DB_GROUP_COMMIT": "true" if group_commit else "false",
            "AGENTQ_STEP_LEDGER": "true" if step_ledger else "false",
        }
        agent_id, modules = self.agent_id, "actors"
        if lean:
            if self.lean_agent_id is None:
                raise BenchmarkError("a lean run needs the lean agent (main() creates it for --lean)")
            kind, agent_id, modules = "pipeline-lean", self.lean_agent_id, "actors benchmarks.lean_kind"
            env.update(LEAN_ENV)
        self.redis_client.flushdb()
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("TRUNCATE ai_agent_task_steps, ai_agent_task_runs, ai_agent_tasks")
            started = time.perf_counter()
            for index in range(tasks):
                task = self.queue.create_task(
                    agent_id=agent_id, organization_id=self.organization_id, title=f"bench task {index}"
                )
                self.queue.add_task(task.id)
            enqueue_s = time.perf_counter() - started

            def progress() -> int:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'completed'),"
                    " count(*) FILTER (WHERE status = 'failed') FROM ai_agent_tasks"
                ).fetchone()
                assert row is not None
                if row[1]:
                    raise BenchmarkError(f"{row[1]} task(s) failed; see the worker log")
                return int(row[0])

            log = self.log_path(kind, processes, threads)
            with run_worker(modules, processes, threads, env, log) as worker:
                first, last = _drain(worker, tasks, progress, _deadline_s(tasks))
            row = conn.execute(
                "SELECT min(started_at), max(completed_at), count(*) FROM ai_agent_tasks"
                " WHERE status = 'completed'"
            ).fetchone()
            if lean:
                self._check_lean(conn)
        assert row is not None
        if row[2] != tasks or row[0] is None or row[1] is None:
            raise BenchmarkError(f"expected {tasks} completed tasks, found {row[2]}")
        drain_s = (row[1] - row[0]).total_seconds()
        worker_ms, server_ms = _per_task_ms(first, last, tasks)
        return self._record(kind, processes, threads, tasks, enqueue_s, drain_s, worker_ms, server_ms, worker)

    def _check_lean(self, conn: psycopg.Connection[Any]) -> None:
        """Raise unless the lean worker ran with its features off: no step recorded, no run event."""
        from actors.events.model import stream_key

        steps = conn.execute("SELECT count(*) FROM ai_agent_task_steps").fetchone()
        if steps is None or steps[0]:
            raise BenchmarkError(f"a lean run recorded {steps and steps[0]} step(s): the ledger was on")
        task = conn.execute("SELECT id FROM ai_agent_tasks LIMIT 1").fetchone()
        assert task is not None
        entries = self.redis_client.xrange(stream_key(str(task[0]))) or []
        types = {fields.get(b"type") for _, fields in entries if fields}
        if b"completed" in types:
            raise BenchmarkError("a lean run published its tasks' events: live events were on")

    def run_bullmq(self, python: Path, processes: int, threads: int, tasks: int) -> RunResult:
        """The seed's architecture: ``bullmq`` jobs doing two status UPDATEs (see ``bullmq_replica``)."""
        self.redis_client.flushdb()
        script = str(ROOT / "benchmarks" / "bullmq_replica.py")
        common = ["--redis", self.env["REDIS_URL"], "--database", self.database_url]
        started = time.perf_counter()
        subprocess.run(
            [str(python), script, "enqueue", *common, "--tasks", str(tasks)], check=True, timeout=300
        )
        enqueue_s = time.perf_counter() - started
        with psycopg.connect(self.database_url, autocommit=True) as conn:

            def progress() -> int:
                row = conn.execute("SELECT count(*) FROM replica_tasks WHERE status = 'completed'").fetchone()
                return int(row[0]) if row else 0

            log = self.log_path("bullmq", processes, threads)
            command = [str(python), script, "work", *common, "--concurrency", str(threads)]
            with run_processes(command, processes, self.env, log) as worker:
                first, last = _drain(worker, tasks, progress, _deadline_s(tasks))
            row = conn.execute("SELECT min(started_at), max(completed_at) FROM replica_tasks").fetchone()
        assert row is not None and row[0] is not None and row[1] is not None
        drain_s = (row[1] - row[0]).total_seconds()
        worker_ms, server_ms = _per_task_ms(first, last, tasks)
        return self._record(
            "bullmq", processes, threads, tasks, enqueue_s, drain_s, worker_ms, server_ms, worker
        )

    def _record(
        self,
        kind: str,
        processes: int,
        threads: int,
        tasks: int,
        enqueue_s: float,
        drain_s: float,
        worker_ms: float | None,
        server_ms: float | None,
        worker: Worker,
    ) -> RunResult:
        result = RunResult(
            kind, processes, threads, tasks, enqueue_s, drain_s, worker_ms, server_ms, worker.stop_s
        )
        self.runs.append(result)
        print(
            f"  {kind:8} {processes}x{threads}: drain {result.throughput:8.1f} tasks/s,"
            f" enqueue {result.enqueue_rate:7.1f} tasks/s, worker CPU {_fmt(worker_ms, 2)} ms/task,"
            f" server CPU {_fmt(server_ms, 2)} ms/task, stop {worker.stop_s:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        return result


# --- the report -------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _cpu(runs: list[RunResult], field: str) -> str:
    """The median of a CPU-per-task field over ``runs``, formatted."""
    return _fmt(_median([getattr(r, field) for r in runs]), 2)


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _machine(redis_client: redis.Redis, database_url: str) -> list[str]:
    info: dict[str, Any] = redis_client.info("server")
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: nproc={os.cpu_count()}, {platform.platform()}",
        f"- Python {platform.python_version()}, dramatiq {version('dramatiq')}, redis-py {version('redis')},"
        f" psycopg {version('psycopg')}",
        f"- Redis {info.get('redis_version', '?')}, PostgreSQL {row[0] if row else '?'}",
    ]


def _on_off(runs: list[RunResult], off_kind: str, heading: str) -> list[str]:
    """The table of the pipeline (on) beside its ``off_kind`` runs, per configuration; none without them."""
    if not any(r.kind == off_kind for r in runs):
        return []
    lines = [
        "",
        heading,
        "",
        "| configuration | on tasks/s | off tasks/s | on/off | worker CPU ms/task on / off"
        " | pg+redis CPU ms/task on / off |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for processes, threads in _configs(runs):
        on, off = (
            [r for r in runs if r.kind == kind and (r.processes, r.threads) == (processes, threads)]
            for kind in ("pipeline", off_kind)
        )
        on_rate, off_rate = _median([r.throughput for r in on]), _median([r.throughput for r in off])
        lines.append(
            f"| {processes} process(es) x {threads} threads | {_fmt(on_rate)} | {_fmt(off_rate)}"
            f" | {_fmt(on_rate / off_rate if on_rate and off_rate else None, 3)}"
            f" | {_cpu(on, 'worker_cpu_ms')} / {_cpu(off, 'worker_cpu_ms')}"
            f" | {_cpu(on, 'server_cpu_ms')} / {_cpu(off, 'server_cpu_ms')} |"
        )
    return lines


def _configs(runs: list[RunResult]) -> list[tuple[int, int]]:
    """The worker configurations measured in ``runs``, fewest processes and threads first."""
    return sorted({(run.processes, run.threads) for run in runs})


def render(runs: list[RunResult], tasks: int, repeats: int, machine: list[str], wall_s: float) -> str:
    lines = [
        "# Pipeline vs bare Dramatiq throughput",
        "",
        f"N={tasks} tasks per run, median of {repeats} run(s) per cell; bare and pipeline runs interleaved.",
        "",
        *machine,
        f"- total benchmark wall time: {wall_s:.0f} s",
        "",
        "| configuration | bare tasks/s | pipeline tasks/s | BullMQ replica tasks/s | pipeline/bare"
        " | pipeline/BullMQ | bare enqueue tasks/s"
        " | pipeline enqueue tasks/s (create+add_task) | worker CPU ms/task bare / pipeline"
        " | pg+redis CPU ms/task bare / pipeline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for processes, threads in _configs(runs):
        cell = {
            kind: [r for r in runs if r.kind == kind and (r.processes, r.threads) == (processes, threads)]
            for kind in ("bare", "pipeline", "bullmq")
        }
        bare = _median([r.throughput for r in cell["bare"]])
        pipe = _median([r.throughput for r in cell["pipeline"]])
        bull = _median([r.throughput for r in cell["bullmq"]])
        ratio = pipe / bare if pipe is not None and bare else None
        versus = pipe / bull if pipe is not None and bull else None
        lines.append(
            f"| {processes} process(es) x {threads} threads | {_fmt(bare)} | {_fmt(pipe)} | {_fmt(bull)}"
            f" | {_fmt(ratio, 3)} | {_fmt(versus, 3)}"
            f" | {_fmt(_median([r.enqueue_rate for r in cell['bare']]))}"
            f" | {_fmt(_median([r.enqueue_rate for r in cell['pipeline']]))}"
            f" | {_fmt(_median([r.worker_cpu_ms for r in cell['bare']]), 2)}"
            f" / {_fmt(_median([r.worker_cpu_ms for r in cell['pipeline']]), 2)}"
            f" | {_fmt(_median([r.server_cpu_ms for r in cell['bare']]), 2)}"
            f" / {_fmt(_median([r.server_cpu_ms for r in cell['pipeline']]), 2)} |"
        )
    lines += _on_off(
        runs,
        "pipeline-solo",
        "Group commit on (default) vs off (`AGENTQ_DB_GROUP_COMMIT=false`, every claim and completion"
        " written alone), interleaved in the same run:",
    )
    lines += _on_off(
        runs,
        "pipeline-no-ledger",
        "Step ledger on (default) vs off (`AGENTQ_STEP_LEDGER=false`, no step recorded), one model call"
        " per task, interleaved in the same run:",
    )
    lines += _on_off(
        runs,
        "pipeline-lean",
        "Default vs lean (a sync agent kind on worker threads; live events, step ledger, presence and cancel"
        " watch off: `benchmarks/lean_kind.py`), interleaved in the same run:",
    )
    lines += [
        "",
        "Every run, in order:",
        "",
        "| # | kind | configuration | drain tasks/s | drain s | enqueue tasks/s | worker CPU ms/task"
        " | pg+redis CPU ms/task | SIGTERM to exit s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for index, r in enumerate(runs, 1):
        lines.append(
            f"| {index} | {r.kind} | {r.processes}x{r.threads} | {r.throughput:.1f} | {r.drain_s:.2f}"
            f" | {r.enqueue_rate:.1f} | {_fmt(r.worker_cpu_ms, 2)} | {_fmt(r.server_cpu_ms, 2)}"
            f" | {r.stop_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


# --- setup and main -----------------------------------------------------------------


def _admin(url: str, statement: sql.Composed) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def _database_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def _config(text: str) -> tuple[int, int]:
    """``"2x8"`` as (2, 8)."""
    processes, sep, threads = text.partition("x")
    if not (sep and processes.isdigit() and threads.isdigit() and int(processes) > 0 and int(threads) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not PROCESSESxTHREADS, e.g. 2x8")
    return int(processes), int(threads)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--tasks", type=int, default=None, help="tasks per run (default 2000; 300 with --quick)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="runs per cell (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=300, 1 repeat")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument(
        "--bullmq-python",
        type=Path,
        default=ROOT / ".venv-bench" / "bin" / "python",
        help="interpreter with the bullmq package for the BullMQ replica (skipped when missing; `make bench`"
        " creates it)",
    )
    parser.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs even on success")
    parser.add_argument(
        "--solo",
        action="store_true",
        help="also run the pipeline with AGENTQ_DB_GROUP_COMMIT=false (every write alone), interleaved",
    )
    parser.add_argument(
        "--no-ledger",
        action="store_true",
        help="also run the pipeline with AGENTQ_STEP_LEDGER=false (no step recorded), interleaved",
    )
    parser.add_argument(
        "--lean",
        action="store_true",
        help="also run the pipeline lean: a sync agent kind, live events, step ledger, presence and cancel"
        " watch off (benchmarks/lean_kind.py; to compare with a build that predates them), interleaved",
    )
    parser.add_argument(
        "--only-pipeline",
        action="store_true",
        help="leave out the bare Dramatiq and BullMQ runs (for --solo/--no-ledger/--lean comparisons)",
    )
    parser.add_argument(
        "--config",
        action="append",
        type=_config,
        help="a worker configuration PROCESSESxTHREADS to measure (repeatable; default 1x8 and 2x8)",
    )
    args = parser.parse_args(argv)
    args.tasks = args.tasks or (300 if args.quick else 2000)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.configs = tuple(args.config or CONFIGS)
    if args.tasks < 2 or args.repeats < 1:
        parser.error("--tasks must be at least 2 and --repeats at least 1")
    if not args.redis_url.rstrip("/").rsplit("/", 1)[-1].isdigit():
        parser.error("--redis-url must name a dedicated db number (it is flushed), e.g. redis://host:6379/13")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _, report = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    print(f"written to {args.output}", file=sys.stderr)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """The options of ``argv`` (for the combined runner)."""
    return _parse(argv)


def run(args: argparse.Namespace) -> tuple[list[RunResult], str]:
    """Every run of every cell, and the markdown report of them."""
    wall = time.monotonic()
    db_name = f"{DB_PREFIX}{secrets.token_hex(4)}"
    database_url = _database_url(args.pg_admin_url, db_name)
    log_dir = Path(tempfile.mkdtemp(prefix="agentq-bench-"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "REDIS_URL": args.redis_url,
        "BENCH_REDIS_URL": args.redis_url,
        "DATABASE_URL": database_url,
        "QUEUE_CONCURRENCY": str(max(threads for _, threads in args.configs)),
        # Throughput is measured without the start rate limit (its default is 100 a minute).
        "AGENTQ_RATE_LIMIT_MAX": "0",
        "AGENTQ_ALLOW_SCRIPTED": "true",
    }
    # ``actors`` builds its runtime from the environment at import; the bare broker reads BENCH_REDIS_URL.
    os.environ.update(env)
    redis_client = redis.Redis.from_url(args.redis_url)
    redis_client.ping()
    print(f"database {db_name}, Redis {args.redis_url}, worker logs in {log_dir}", file=sys.stderr)
    _admin(args.pg_admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    ok = False
    store: TaskStore | None = None
    try:
        from actors import runtime

        store = runtime.store
        store.migrate()
        organization_id = "00000000-0000-4000-8000-00000000be00"
        agent_id = _bench_agent(store, organization_id, "bench", "general")
        bench = Bench(
            redis_client,
            database_url,
            runtime.queue,
            store,
            agent_id,
            organization_id,
            env,
            log_dir,
            lean_agent_id=_lean_agent(store, organization_id) if args.lean else None,
        )
        for repeat in range(1, args.repeats + 1):
            for processes, threads in args.configs:
                print(
                    f"repeat {repeat}/{args.repeats}, {processes} process(es) x {threads} threads",
                    file=sys.stderr,
                )
                if not args.only_pipeline:
                    bench.run_bare(processes, threads, args.tasks)
                bench.run_pipeline(processes, threads, args.tasks)
                if args.solo:
                    bench.run_pipeline(processes, threads, args.tasks, group_commit=False)
                if args.no_ledger:
                    bench.run_pipeline(processes, threads, args.tasks, step_ledger=False)
                if args.lean:
                    bench.run_pipeline(processes, threads, args.tasks, lean=True)
                if args.bullmq_python.exists() and not args.only_pipeline:
                    bench.run_bullmq(args.bullmq_python, processes, threads, args.tasks)
        report = render(
            bench.runs,
            args.tasks,
            args.repeats,
            _machine(redis_client, database_url),
            time.monotonic() - wall,
        )
        ok = True
    finally:
        if store is not None:
            store.close()
        redis_client.flushdb()
        _admin(
            args.pg_admin_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name)),
        )
        if ok and not args.keep_logs:
            for path in log_dir.iterdir():
                path.unlink()
            log_dir.rmdir()
        else:
            print(f"worker logs kept in {log_dir}", file=sys.stderr)
    return bench.runs, report


def _lean_agent(store: TaskStore, organization_id: str) -> str:
    """The lean runs' agent; its kind's actor is declared in this process too (the producer needs it)."""
    import benchmarks.lean_kind  # noqa: F401 (declares the kind)

    return _bench_agent(store, organization_id, "bench-lean", LEAN_KIND)


def _bench_agent(store: TaskStore, organization_id: str, name: str, kind: str) -> str:
    """A new agent of ``kind`` on the zero-latency ``scripted`` provider; returns its id."""
    from taskstore import NewAgent, utcnow

    agent = NewAgent(
        provider="scripted", model="scripted-1", organization_id=organization_id, name=name, kind=kind
    )
    return store.create_agent(agent, now=utcnow()).id


def figures(runs: list[RunResult]) -> list[Figure]:
    """Pipeline vs bare Dramatiq and vs the BullMQ replica, per configuration (targets at 2 x 8)."""
    found = []
    for processes, threads in _configs(runs):
        medians = {
            kind: _median(
                [
                    r.throughput
                    for r in runs
                    if r.kind == kind and (r.processes, r.threads) == (processes, threads)
                ]
            )
            for kind in ("bare", "pipeline", "bullmq")
        }
        pipe = medians["pipeline"]
        if pipe is None:
            continue
        targeted = processes == 2
        case = f"{processes} process(es) x {threads} threads"
        unrecorded = _median(
            [
                r.throughput
                for r in runs
                if r.kind == "pipeline-no-ledger" and (r.processes, r.threads) == (processes, threads)
            ]
        )
        if unrecorded is not None:
            found.append(
                Figure(
                    "step ledger on vs off",
                    case,
                    rate(pipe),
                    f"off {rate(unrecorded)}: ratio {pipe / unrecorded:.2f}",
                    "≥ 0.9 of off (one-step runs)",
                    pipe / unrecorded >= 0.9,
                )
            )
        for kind, label, target in (("bare", "bare Dramatiq", 0.5), ("bullmq", "BullMQ replica", 1.0)):
            peer = medians[kind]
            if peer is None:
                continue
            found.append(
                Figure(
                    "pipeline throughput",
                    case,
                    rate(pipe),
                    f"{label} {rate(peer)}: ratio {pipe / peer:.2f}",
                    f"≥ {target:g} of {label}" if targeted else "(targets at 2 processes)",
                    pipe / peer >= target if targeted else None,
                )
            )
    return found


if __name__ == "__main__":
    sys.exit(main())
