"""A queue wired for tests: real middleware and actors on any broker and store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import dramatiq
from dramatiq import Broker, Worker
from dramatiq.brokers.stub import StubBroker

from actors.agent_actor import AgentActor, AgentJob, agent_actor
from actors.runtime import Runtime, build_runtime
from actors.task_queue import AgentTaskQueue
from config.settings import Settings, load_settings
from middleware import build_middleware
from middleware.in_flight import RunsInFlight
from middleware.task_lifecycle import AttemptResult, TaskLifecycle
from orchestrator.errors import ProviderRateLimited
from taskstore import NewAgent, Task, TaskStore, utcnow

ORG = "11111111-1111-4111-8111-111111111111"
OTHER_ORG = "33333333-3333-4333-8333-333333333333"


@dataclass
class Harness:
    """A runtime plus the kinds declared on its broker."""

    runtime: Runtime
    kinds: dict[str, AgentActor]

    @property
    def queue(self) -> AgentTaskQueue:
        return self.runtime.queue

    @property
    def store(self) -> TaskStore:
        return self.runtime.store

    @property
    def broker(self) -> dramatiq.Broker:
        return self.runtime.broker

    def agent(self, **fields: Any) -> str:
        values: dict[str, Any] = {
            "organization_id": ORG,
            "name": "Test agent",
            "provider": "scripted",
            "model": "scripted-1",
            "allowed_tools": ("calculate", "get_current_time"),
        }
        values.update(fields)
        return self.store.create_agent(NewAgent(**values), now=utcnow()).id

    def task(self, agent_id: str | None = None, **fields: Any) -> str:
        values: dict[str, Any] = {
            "agent_id": agent_id or self.agent(),
            "organization_id": ORG,
            "title": "Test task",
        }
        values.update(fields)
        task: Task = self.queue.create_task(**values)
        return task.id

    @contextmanager
    def worker(self, threads: int = 2) -> Iterator[Worker]:
        worker = Worker(self.broker, worker_timeout=20, worker_threads=threads)
        worker.start()
        try:
            yield worker
        finally:
            worker.stop()

    def drain(self, worker: Worker, timeout_s: float = 30) -> None:
        """Wait until every queue (delayed included) is empty, the worker is idle and no run is in flight on
        the event loop (a run's end may send a retry: then the queues are waited for again)."""
        assert isinstance(self.broker, StubBroker)
        in_flight = runs_in_flight(self.broker)
        deadline = time.monotonic() + timeout_s
        while True:
            for queue_name in list(self.broker.queues):
                if not queue_name.endswith(".DQ") and not queue_name.endswith(".XQ"):
                    self.broker.join(queue_name, timeout=int(timeout_s * 1000))
            worker.join()
            left = max(deadline - time.monotonic(), 0.1)
            assert in_flight.wait_idle(left), f"runs still in flight after {timeout_s}s"
            if all(not self.broker.queues[name].qsize() for name in self.broker.queues):
                return
            assert time.monotonic() < deadline, f"queues not empty after {timeout_s}s"


def runs_in_flight(broker: Broker) -> RunsInFlight:
    """The slots of the broker's ``TaskLifecycle``: the runs of async kinds on the event loop."""
    for middleware in broker.middleware:
        if isinstance(middleware, TaskLifecycle):
            return middleware.in_flight
    raise AssertionError("TaskLifecycle is not on the broker")


def declare_kinds(runtime: Runtime) -> dict[str, AgentActor]:
    """The kinds the tests use: ``general`` runs the agent on the event loop, ``general_in_thread`` in its
    worker thread; ``crashing`` and ``capped`` raise plain exceptions; ``throttled`` is postponed."""
    declare = partial(
        agent_actor,
        store=runtime.store,
        orchestrator=runtime.orchestrator,
        broker=runtime.broker,
        budget=runtime.budget,
        step_ledger=runtime.settings.step_ledger,
    )

    @declare(kind="general")
    async def general(job: AgentJob) -> AttemptResult:
        return await job.arun_agent()

    @declare(kind="general_in_thread")
    def general_in_thread(job: AgentJob) -> AttemptResult:
        return job.run_agent()

    @declare(kind="crashing")
    def crashing(job: AgentJob) -> AttemptResult:
        raise RuntimeError(f"crash in attempt {job.attempt}")

    @declare(kind="capped", max_retries=1)
    def capped(job: AgentJob) -> AttemptResult:
        raise RuntimeError("always")

    @declare(kind="throttled")
    def throttled(job: AgentJob) -> AttemptResult:
        if job.task.postponed_count < int(job.task.context.get("throttle", 0)):
            raise Throttled(postpone_ms=int(job.task.context.get("postpone_ms", 10)))
        return job.run_agent()

    return {
        "general": general,
        "general_in_thread": general_in_thread,
        "crashing": crashing,
        "capped": capped,
        "throttled": throttled,
    }


class Throttled(ProviderRateLimited):
    """A provider's 429 as the queue sees it: wait ``postpone_ms``, keep the attempt."""

    def __init__(self, postpone_ms: int) -> None:
        super().__init__(f"rate limited; retry after {postpone_ms}ms", retry_after_ms=postpone_ms)


def harness_settings(**overrides: Any) -> Settings:
    # No start rate limit unless a test asks for one (the default, 100 a minute, would slow many tests);
    # the tests' agents are scripted, which a worker runs only when allowed.
    values: dict[str, Any] = {"backoff_ms": 10, "rate_limit_max": 0, "allow_scripted": True}
    values.update(overrides)
    return load_settings(**values)


@contextmanager
def stub_harness(store: TaskStore, **settings: Any) -> Iterator[Harness]:
    """Middleware, kinds and queue on a ``StubBroker`` over ``store``."""
    config = harness_settings(**settings)
    broker = StubBroker(middleware=build_middleware(config, store))
    broker.emit_after("process_boot")
    runtime = build_runtime(config, store=store, broker=broker)
    try:
        yield Harness(runtime, declare_kinds(runtime))
    finally:
        broker.close()


def wait_until(
    condition: Any, *, timeout_s: float = 30.0, interval_s: float = 0.02, what: str = "condition"
) -> None:
    """Wait for ``condition()`` to be true, bounded by ``timeout_s``; fail naming ``what`` otherwise."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


@contextmanager
def redis_harness(store: TaskStore, redis_url: str, **settings: Any) -> Iterator[Harness]:
    """Middleware, kinds and queue on the real Redis broker over ``store``."""
    from actors.broker.factory import build_broker

    config = harness_settings(redis_url=redis_url, **settings)
    broker = build_broker(config, store)
    broker.emit_after("process_boot")
    runtime = build_runtime(config, store=store, broker=broker)
    try:
        yield Harness(runtime, declare_kinds(runtime))
    finally:
        broker.close()
