"""Cancelling a run in the middle of a call: how long ``remove_job`` takes to end it, and what it costs.

    python -m benchmarks.cancel [--runs 20] [--redis-url redis://127.0.0.1:6379/12]

1. **Latency**: a worker (in this process: real Redis, a fresh Postgres database, the OpenAI SDK over HTTP to
   the fake server) runs a task whose model call the server answers only after 30 s, or whose tool waits
   30 s; ``remove_job`` is called once the call is in flight. Reported: seconds from the ``remove_job`` call
   to the run's end as the database records it (``finished_at``), p50 / p95 / max over ``--runs``.
2. **Cost of a cancellable model call**: a no-op coroutine awaited through
   ``orchestrator.cancel.until_cancelled`` (raced against the signal on the event loop) against awaiting it
   directly, microseconds per call.
3. **Cost of watching**: one ``CancelWatch.check`` (one ``MGET``) for 64 running attempts, microseconds;
   a busy worker process makes one every ``POLL_S`` (an idle one none).
4. **Concurrent runs, with and without the signal**: 64 threads each run the agent loop on one model call
   that takes 200 ms (a provider that sleeps), alternately with a cancel signal (the call raced
   against it on the event loop, as in a worker) and without; runs per second of each, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
from dramatiq.brokers.redis import RedisBroker

from middleware.attempts import AttemptRegistry
from middleware.cancel_watch import POLL_S, CancelWatch
from orchestrator import (
    AgentSpec,
    ModelRequest,
    ModelResponse,
    Orchestrator,
    ProviderRegistry,
    TaskInput,
    Usage,
)
from orchestrator.cancel import CancelSignal, until_cancelled
from orchestrator.tools import ToolRegistry
from taskstore import Claim, InMemoryTaskStore, TaskStatus
from taskstore.postgres import PostgresTaskStore
from tests.conftest import Clock
from tests.fakes.http_server import FakeReply
from tests.fakes.openai_server import FakeOpenAIServer, openai_text, openai_tool_calls
from tests.fakes.tools import lines
from tests.harness import Harness, redis_harness, wait_until
from tests.services import temporary_database
from tests.taskstore.test_conformance import running_task

DEFAULT_REDIS_URL = os.environ.get("AGENTQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")


def _cancellable_us(calls: int, *, signal: bool) -> float:
    """Microseconds per no-op coroutine awaited through ``until_cancelled`` (directly: ``signal=False``)."""

    async def noop() -> None:
        return None

    async def measure() -> float:
        cancel = CancelSignal() if signal else None
        began = time.perf_counter()
        for _ in range(calls):
            await until_cancelled(noop(), cancel, "a call")
        return (time.perf_counter() - began) / calls * 1e6

    return asyncio.run(measure())


def _latency(app: Harness, server: FakeOpenAIServer, runs: int, *, tool: bool, folder: Path) -> list[float]:
    """Seconds from ``remove_job`` to the run's recorded end, for ``runs`` cancels."""
    found: list[float] = []
    tools = ("slow_export",) if tool else ()
    agent = app.agent(provider="openai", model="gpt-4o-mini", allowed_tools=tools)
    for index in range(runs):
        progress = folder / f"export-{tool}-{index}.txt"
        if tool:
            server.enqueue(openai_tool_calls(("slow_export", {"path": str(progress), "seconds": 30})))
        else:
            server.enqueue(FakeReply(openai_text("too late").body, delay_s=30))
        task_id = app.task(agent, title=f"cancel me {index}")
        calls = len(server.requests)
        app.queue.add_task(task_id)
        if tool:
            wait_until(lambda: lines(progress) == ["started"], what="the tool")  # noqa: B023
        else:
            wait_until(lambda: len(server.requests) > calls, what="the model call")  # noqa: B023
        asked = time.time()
        app.queue.remove_job(task_id)
        wait_until(lambda: app.store.get_task(task_id).status == TaskStatus.CANCELLED, what="the cancel")  # type: ignore[union-attr]  # noqa: B023
        [run] = app.store.get_runs(task_id)
        assert run.finished_at is not None
        found.append(run.finished_at.timestamp() - asked)
    return found


def _watch_us(redis_url: str, attempts_count: int, checks: int) -> float:
    """Microseconds of one ``CancelWatch.check`` over ``attempts_count`` running attempts."""
    store, clock, registry = InMemoryTaskStore(), Clock(), AttemptRegistry()
    for index in range(attempts_count):
        task_id, run_id = running_task(store, clock)
        task = store.get_task(task_id)
        assert task is not None
        registry.add(f"message-{index}", Claim(task=task, agent=None, run_id=run_id))
    broker = RedisBroker(url=redis_url)  # type: ignore[no-untyped-call]
    watch = CancelWatch(registry)
    try:
        started = time.perf_counter()
        for _ in range(checks):
            watch.check(broker)
        return (time.perf_counter() - started) / checks * 1e6
    finally:
        broker.close()


class _Sleepy:
    """A provider whose every call takes ``delay_s`` (sleeping, as a thread waiting on a socket does)."""

    name = "sleepy"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def complete(self, request: ModelRequest) -> ModelResponse:
        time.sleep(self.delay_s)
        return ModelResponse("done", (), Usage(input_tokens=1, output_tokens=1), "m", "stop")


def _runs_per_s(threads: int, runs: int, *, signal: bool) -> float:
    """Runs per second of ``threads`` threads running ``runs`` single-call runs in all."""
    provider = _Sleepy(0.2)
    orchestrator = Orchestrator(ProviderRegistry({"sleepy": lambda: provider}), ToolRegistry())
    agent = AgentSpec(id="a", name="bench", provider="sleepy", model="m")
    left = [runs]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            cancel = CancelSignal() if signal else None
            orchestrator.run(agent, TaskInput(id="t", title="bench"), cancel=cancel)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return runs / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    redis.Redis.from_url(args.redis_url).flushdb()
    with temporary_database() as url, tempfile.TemporaryDirectory() as folder, FakeOpenAIServer() as server:
        store = PostgresTaskStore(url, max_size=8)
        store.migrate()
        settings = {
            "openai_api_key": "sk-bench",
            "openai_base_url": server.base_url,
            "tools": ("tests.fakes.approval_tools:tools",),
        }
        with redis_harness(store, args.redis_url, **settings) as app, app.worker(threads=4):
            model = _latency(app, server, args.runs, tool=False, folder=Path(folder))
            tool = _latency(app, server, args.runs, tool=True, folder=Path(folder))
        store.close()
    direct, cancellable = _cancellable_us(20_000, signal=False), _cancellable_us(20_000, signal=True)
    watch = _watch_us(args.redis_url, 64, 2_000)
    rounds = [(_runs_per_s(64, 1280, signal=True), _runs_per_s(64, 1280, signal=False)) for _ in range(3)]
    with_signal, without = statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)
    redis.Redis.from_url(args.redis_url).flushdb()

    def row(name: str, values: list[float]) -> str:
        ordered = sorted(values)
        p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
        return f"{name:<34} p50 {statistics.median(ordered):.3f} s  p95 {p95:.3f} s  max {ordered[-1]:.3f} s"

    print(f"remove_job → cancelled, {args.runs} runs each (CancelWatch polls every {POLL_S} s):")
    print(row("  during a 30 s model call", model))
    print(row("  during a 30 s tool", tool))
    print(f"model call through until_cancelled: {cancellable:.1f} µs per call (directly: {direct:.2f} µs)")
    print(
        f"CancelWatch.check, 64 running attempts: {watch:.0f} µs (one MGET) every {POLL_S} s per busy process"
    )
    print(
        f"64 threads x 200 ms model calls (median of 3): {with_signal:.0f} runs/s with the signal,"
        f" {without:.0f} without (ratio {with_signal / without:.2f}; ideal 320)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
