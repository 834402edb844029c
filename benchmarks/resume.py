"""What a crash costs: model calls for tasks killed once mid-run, resumed from the step ledger or restarted.

    python -m benchmarks.resume [--tasks 100] [--latency 0.4]

Each task is a three-step agent run against an OpenAI-protocol fake server (a model call asking for the
``calculate`` tool, a second one asking for it again, a final answer; every answer after ``--latency``
seconds). All tasks are queued, a ``dramatiq actors`` worker (one process, a thread per task) starts them, and
once every task's second model call is in flight (the server holds them) — the middle of every run, after
its first call and tool call — the worker is SIGKILLed. A second worker recovers the stalled tasks (leases
of 2 s) and finishes them.
This is done twice, interleaved per repeat: with the step ledger (``AGENTQ_STEP_LEDGER=true``: the second
attempt resumes after the completed steps) and without it (``false``: the second attempt starts the run
over). Reported: the model calls the server answered or was asked for in all, per task, the tokens billed
(from the tasks' usage) and their cost at ``gpt-4o-mini`` prices, and the share saved by resuming.

It uses Redis db 1 by default (``--redis-url``, flushed before each case) and a Postgres database it creates
and drops. The markdown is printed and written to ``benchmarks/results/resume-latest.md``. No timing is
asserted: a case fails only if a task does not complete.
"""

from __future__ import annotations

import argparse
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
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import redis

from benchmarks.summary import Figure
from orchestrator import PriceTable, Usage
from tests.fakes.openai_server import openai_text, openai_tool_calls
from tests.services import temporary_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "resume-latest.md"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/1"
ORG = "5e500000-0000-4000-8000-000000000000"
MODEL = "gpt-4o-mini"
#: Model calls of one run: two tool calls, then the final answer.
STEPS = 3
POLL_S = 0.1
#: Longest the server holds a second model call.
MAX_HOLD_S = 120.0
#: Input and output tokens of every answer of the fake (``tests.fakes.openai_server`` defaults).
TOKENS = (10, 5)


class ConversationServer(ThreadingHTTPServer):
    """An OpenAI Chat Completions fake that answers by where the conversation is: a ``calculate`` call for
    the first two turns, then the final answer; every answer after ``latency`` seconds. The second model
    call is held until :meth:`release` (so every task can be caught with it in flight). Counts requests."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, latency: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latency = latency
        self.requests = 0
        #: Answers delivered (what a provider bills); a call whose worker died before the answer is not.
        self.answered = 0
        #: Requests per turn (0: the run's first model call).
        self.by_turn = [0] * STEPS
        self.lock = threading.Lock()
        self.released = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def release(self) -> None:
        """Answer the second model calls from now on (those held so far too)."""
        self.released.set()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        turn = sum(1 for message in body.get("messages", []) if message.get("role") == "assistant")
        with self.lock:
            self.requests += 1
            self.by_turn[min(turn, STEPS - 1)] += 1
        if turn == 1:
            self.released.wait(MAX_HOLD_S)
        if turn < STEPS - 1:
            return dict(openai_tool_calls(("calculate", {"expression": f"{turn} + 1"})).body)
        return dict(openai_text("done").body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ConversationServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        reply = json.dumps(self.server.answer(body)).encode()
        time.sleep(self.server.latency)
        try:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the worker was killed while waiting
            return
        with self.server.lock:
            self.server.answered += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(latency: float) -> Iterator[ConversationServer]:
    server = ConversationServer(latency)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Case:
    ledger: bool
    tasks: int
    #: Tasks that had already completed when the worker was killed (not killed mid-run).
    done_before_kill: int
    calls_before_kill: int
    calls: int
    #: Calls answered: what the provider bills.
    answered: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    resumed_runs: int

    @property
    def mode(self) -> str:
        return "resume (ledger on)" if self.ledger else "restart (ledger off)"


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    threads = env["QUEUE_CONCURRENCY"]
    command = [sys.executable, "-m", "dramatiq", "actors", "--processes", "1", "--threads", threads]
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_S)


def run_case(
    database_url: str, redis_url: str, args: argparse.Namespace, *, ledger: bool, log_dir: Path
) -> Case:
    """Queue ``args.tasks`` three-step tasks, kill the worker mid-run once, finish them on a second worker."""
    with serving(args.latency) as server:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OPENAI_API_KEY": "sk-bench-not-a-key",
            "OPENAI_BASE_URL": server.base_url,
            "AGENTQ_STEP_LEDGER": "true" if ledger else "false",
            "AGENTQ_STALLED_INTERVAL_MS": "2000",
            "AGENTQ_RECONCILE_INTERVAL_MS": "1000",
            "AGENTQ_RATE_LIMIT_MAX": "0",
            "QUEUE_CONCURRENCY": str(args.tasks + 10),
        }
        redis.Redis.from_url(redis_url).flushdb()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("TRUNCATE ai_agent_task_steps, ai_agent_task_runs, ai_agent_tasks")
            agent_id = conn.execute("SELECT id FROM ai_agents LIMIT 1").fetchone()[0]  # type: ignore[index]
        _enqueue(env, str(agent_id), args.tasks)
        first = _worker(env, log_dir / f"{'ledger' if ledger else 'no-ledger'}-first.log")
        try:
            _wait(lambda: server.by_turn[1] >= args.tasks, 120, "every task's second model call")
        finally:
            _stop(first, signal.SIGKILL)
            server.release()
        calls_before_kill = server.requests
        with psycopg.connect(database_url, autocommit=True) as conn:
            done_before_kill = _completed(conn)
        second = _worker(env, log_dir / f"{'ledger' if ledger else 'no-ledger'}-second.log")
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                _wait(lambda: _completed(conn) == args.tasks, 300, f"{args.tasks} tasks to complete")
                row = conn.execute(
                    "SELECT sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(stalled_count)"
                    " FROM ai_agent_tasks"
                ).fetchone()
                resumed = conn.execute(
                    "SELECT count(*) FROM ai_agent_task_runs"
                    """ WHERE status = 'completed' AND transcript @> '[{"replayed": true}]'"""
                ).fetchone()
        finally:
            _stop(second, signal.SIGTERM)
        assert row is not None and resumed is not None
        return Case(
            ledger,
            args.tasks,
            done_before_kill,
            calls_before_kill,
            server.requests,
            server.answered,
            int(row[0]),
            int(row[1]),
            Decimal(row[2]),
            int(resumed[0]),
        )


def _completed(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed')"
        " FROM ai_agent_tasks"
    ).fetchone()
    assert row is not None
    if row[1]:
        raise RuntimeError(f"{row[1]} task(s) failed; see the worker logs")
    return int(row[0])


def _enqueue(env: dict[str, str], agent_id: str, tasks: int) -> None:
    """Create and queue the tasks from a producer process (the runtime reads the environment at import)."""
    code = (
        "from actors import agent_task_queue as q\n"
        f"for n in range({tasks}):\n"
        f"    task = q.create_task(agent_id={agent_id!r}, organization_id={ORG!r}, title=f'Sum {{n}}')\n"
        "    q.add_task(task.id)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=300)


def render(cases: list[Case], args: argparse.Namespace, wall_s: float) -> str:
    by_mode = {ledger: [case for case in cases if case.ledger is ledger] for ledger in (True, False)}
    lines = [
        "# Resume vs restart: model calls for tasks killed once mid-run",
        "",
        f"{args.tasks} three-step tasks (two tool calls, then the answer) per case, each model answer after"
        f" {args.latency:g} s; the worker is SIGKILLed while every task's second model call is in flight, a"
        f" second worker recovers and finishes every task. {args.repeats} repeat(s), ledger on and off"
        " interleaved.",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: nproc={os.cpu_count()}, {platform.platform()}, Python {platform.python_version()}",
        f"- total wall time: {wall_s:.0f} s",
        "",
        "| mode | repeat | tasks done before the kill | calls before the kill | model calls in all"
        " | answered (billed) | calls per task | billed USD at gpt-4o-mini prices"
        " | tokens recorded on the tasks (in / out) | runs resumed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ledger in (True, False):
        for index, case in enumerate(by_mode[ledger], 1):
            lines.append(
                f"| {case.mode} | {index} | {case.done_before_kill} | {case.calls_before_kill} | {case.calls}"
                f" | {case.answered} | {case.calls / case.tasks:.2f} | {billed(case.answered):.6f}"
                f" | {case.input_tokens} / {case.output_tokens} | {case.resumed_runs} |"
            )
    on = sum(case.calls for case in by_mode[True])
    off = sum(case.calls for case in by_mode[False])
    extra_on = sum(case.calls - STEPS * case.tasks for case in by_mode[True])
    extra_off = sum(case.calls - STEPS * case.tasks for case in by_mode[False])
    answered_on = sum(case.answered for case in by_mode[True])
    answered_off = sum(case.answered for case in by_mode[False])
    lines += [
        "",
        f"Answered (billed) model calls: resume {answered_on}, restart {answered_off}: resuming saved"
        f" {answered_off - answered_on} ({(answered_off - answered_on) / answered_off:.0%}). The fake"
        f" answers {TOKENS[0]} input and {TOKENS[1]} output tokens per call; at a real prompt's size the"
        " saving scales with it. Tokens recorded on the tasks: with the ledger, a killed run's completed"
        " calls"
        " are billed to it from the ledger, so the tasks' totals equal what was answered; without it they are"
        " lost.",
        "",
        f"Model calls in all: resume {on}, restart {off}: resuming saved {off - on} calls"
        f" ({(off - on) / off:.0%} of the restart's). Calls beyond the {STEPS} a run needs (the crash's"
        f" cost): resume {extra_on}, restart {extra_off}.",
    ]
    return "\n".join(lines) + "\n"


def billed(calls: int) -> Decimal:
    """What ``calls`` answers of the fake cost at ``gpt-4o-mini`` prices."""
    cost = PriceTable().cost(MODEL, Usage(input_tokens=TOKENS[0], output_tokens=TOKENS[1]))
    assert cost is not None
    return cost * calls


def figures(cases: list[Case]) -> list[Figure]:
    on = sum(case.calls for case in cases if case.ledger)
    off = sum(case.calls for case in cases if not case.ledger)
    if not on or not off:
        return []
    return [
        Figure(
            "resume after a kill",
            "model calls, tasks killed once mid-run",
            f"{on} calls resumed",
            f"restarted {off}: {(off - on) / off:.0%} saved",
            "fewer calls than restarting",
            on < off,
        )
    ]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The options of ``argv`` (also for the combined runner)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resume", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.4, help="seconds before each model answer")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeats < 1 or args.latency <= 0:
        parser.error("--tasks and --repeats must be at least 1, --latency positive")
    return args


def run(args: argparse.Namespace) -> tuple[list[Case], str]:
    """Every case (ledger on and off, interleaved per repeat) and the markdown report of them."""
    wall = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="agentq-resume-"))
    cases: list[Case] = []
    with temporary_database() as database_url:
        from taskstore import NewAgent, utcnow
        from taskstore.postgres import PostgresTaskStore

        store = PostgresTaskStore(database_url, max_size=2)
        store.migrate()
        agent = NewAgent(
            organization_id=ORG, name="bench", provider="openai", model=MODEL, allowed_tools=("calculate",)
        )
        store.create_agent(agent, now=utcnow())
        store.close()
        for repeat in range(1, args.repeats + 1):
            for ledger in (True, False):
                print(f"repeat {repeat}/{args.repeats}, ledger {'on' if ledger else 'off'}", file=sys.stderr)
                case = run_case(database_url, args.redis_url, args, ledger=ledger, log_dir=log_dir)
                print(
                    f"  {case.mode}: {case.calls} model calls ({case.calls_before_kill} before the kill)",
                    file=sys.stderr,
                )
                cases.append(case)
    redis.Redis.from_url(args.redis_url).flushdb()
    shutil.rmtree(log_dir, ignore_errors=True)  # kept only when a case fails
    return cases, render(cases, args, time.monotonic() - wall)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    _, report = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
