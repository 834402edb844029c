"""Runs on the process's event loop: slots and back-pressure, the end written in the run's context, time
limits and the shutdown cut-off (``middleware.in_flight``, ``orchestrator.event_loop``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from typing import Any

import pytest
from dramatiq.middleware.time_limit import TimeLimitExceeded

from middleware.attempts import Attempt
from middleware.failure_policy import describe
from middleware.in_flight import RunCutOff, RunOnLoop, RunsInFlight
from orchestrator.event_loop import offload, process_loop
from taskstore import InMemoryTaskStore, new_id
from tests.conftest import Clock
from tests.taskstore.test_conformance import LEASE, queued_task

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def attempt() -> Attempt:
    """A real claim of a task in an in-memory store."""
    store, clock = InMemoryTaskStore(), Clock()
    task_id = queued_task(store, clock)
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    return Attempt(claim, None)


class Ends:
    """The ``finish`` callback: records each end with the context variable it saw."""

    def __init__(self) -> None:
        self.ends: list[tuple[Any, BaseException | None, str]] = []
        self.done = threading.Event()

    def __call__(self, result: Any, error: BaseException | None) -> None:
        self.ends.append((result, error, WHO.get()))
        self.done.set()


def start(runs: RunsInFlight, coroutine: Any, time_limit_ms: int | None = None) -> tuple[Ends, RunOnLoop]:
    assert runs.acquire()
    ends, run = Ends(), RunOnLoop(coroutine, time_limit_ms)
    WHO.set("the worker thread")
    runs.start(attempt(), run, ends)
    return ends, run


def test_a_run_ends_on_a_finisher_thread_in_the_context_it_started_in_and_gives_its_slot_back() -> None:
    runs = RunsInFlight(1)

    async def answer() -> str:
        await asyncio.sleep(0.01)
        return "done"

    ends, run = start(runs, answer())
    seen: list[tuple[Any, BaseException | None]] = []
    run.when_ended(lambda result, error: seen.append((result, error)))

    assert runs.wait_idle(10) and ends.done.is_set()
    assert ends.ends == [("done", None, "the worker thread")]
    assert seen == [("done", None)]
    late: list[object] = []
    run.when_ended(lambda result, error: late.append(result))  # after the end: called at once
    assert late == ["done"] and runs.in_flight == 0
    runs.shutdown()


def test_every_slot_taken_makes_the_next_thread_wait_until_one_is_given_back_or_shutdown() -> None:
    runs = RunsInFlight(2)
    assert runs.acquire() and runs.acquire()
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(runs.acquire()))
    waiter.start()
    waiter.join(0.6)
    assert waiter.is_alive() and not got  # back-pressure: no third slot

    runs.release()
    waiter.join(5)
    assert got == [True] and runs.in_flight == 2

    closing = threading.Thread(target=lambda: got.append(runs.acquire()))
    closing.start()
    runs.close()
    closing.join(5)
    assert got == [True, False]  # shutdown: the thread gives up (its message goes back)
    runs.open()
    runs.release()
    assert runs.acquire()


def test_giving_back_a_slot_that_was_not_taken_is_refused_and_the_capacity_stays() -> None:
    runs = RunsInFlight(1)
    with pytest.raises(ValueError, match="no slot is taken"):
        runs.release()

    assert runs.acquire()
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(runs.acquire()))
    waiter.start()
    waiter.join(0.6)
    assert waiter.is_alive() and not got  # still one slot: the refused release added none
    runs.close()
    waiter.join(5)
    assert got == [False]


def test_an_end_whose_writing_raises_is_logged_and_later_runs_still_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = RunsInFlight(1)

    async def answer() -> str:
        return "done"

    writers: list[threading.Thread] = []

    def broken(result: Any, error: BaseException | None) -> None:
        writers.append(threading.current_thread())
        raise RuntimeError("the store's write blew up")

    assert runs.acquire()
    runs.start(attempt(), RunOnLoop(answer()), broken)
    assert runs.wait_idle(10)  # the slot came back although writing the end raised
    ends, _ = start(runs, answer())

    assert runs.wait_idle(10) and ends.ends == [("done", None, "the worker thread")]
    assert "writing the end of its run failed" in caplog.text
    runs.shutdown()
    [writer] = writers
    assert writer.name.startswith("agentq-run-end") and not writer.is_alive()  # shutdown stops them


def test_a_finisher_thread_outlives_an_error_escaping_the_end_of_a_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = RunsInFlight(1)
    writers: list[threading.Thread] = []

    async def answer() -> str:
        return "done"

    def gives_its_slot_back_early(result: Any, error: BaseException | None) -> None:
        writers.append(threading.current_thread())
        runs.release()  # a bug: the end's own release then raises past ``_finish``

    assert runs.acquire()
    runs.start(attempt(), RunOnLoop(answer()), gives_its_slot_back_early)
    deadline = time.monotonic() + 10
    while "ending its run failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)

    assert "ending its run failed" in caplog.text
    [writer] = writers
    assert writer.is_alive()  # still there for the next end
    ends, _ = start(runs, answer())
    assert runs.wait_idle(10) and ends.ends == [("done", None, "the worker thread")]
    runs.shutdown()


def test_a_run_past_its_time_limit_ends_with_dramatiqs_time_limit_error() -> None:
    runs = RunsInFlight(1)

    async def hang() -> None:
        await asyncio.sleep(30)

    ends, _ = start(runs, hang(), time_limit_ms=50)

    assert runs.wait_idle(10)
    [(result, error, _)] = ends.ends
    assert result is None and isinstance(error, TimeLimitExceeded)
    assert describe(error) == "the attempt ran longer than its time limit of 50 ms"
    runs.shutdown()


def test_an_error_inside_the_run_is_not_taken_for_the_time_limit() -> None:
    runs = RunsInFlight(1)

    async def fail() -> None:
        raise TimeoutError("the provider's own timeout")

    ends, _ = start(runs, fail(), time_limit_ms=5_000)

    assert runs.wait_idle(10)
    [(_, error, _)] = ends.ends
    assert isinstance(error, TimeoutError) and not isinstance(error, TimeLimitExceeded)
    runs.shutdown()


def test_the_shutdown_cut_off_cancels_a_run_on_the_loop() -> None:
    runs = RunsInFlight(1)
    cancelled = threading.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    assert runs.acquire()
    ends, held = Ends(), attempt()
    runs.start(held, RunOnLoop(hang()), ends)
    time.sleep(0.05)

    assert runs.cut_off(held)
    assert runs.wait_idle(10) and cancelled.is_set()
    [(_, error, _)] = ends.ends
    assert isinstance(error, RunCutOff)
    assert not runs.cut_off(held)  # ended: nothing to cut off
    runs.shutdown()


def test_a_thread_waiting_for_a_run_on_the_loop_gets_its_result_and_its_errors() -> None:
    loop = process_loop()

    async def double(value: int) -> int:
        return 2 * await offload(lambda: value)  # blocking work goes to the loop's executor

    async def fail() -> None:
        raise ValueError("bad")

    assert loop.run(double(21)) == 42
    with pytest.raises(ValueError, match="bad"):
        loop.run(fail())
    assert process_loop() is loop


def test_a_loop_task_cancelled_from_another_thread_gives_cancelled_error() -> None:
    started = threading.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(30)

    task = process_loop().submit(hang())
    assert started.wait(5)
    task.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        task.future.result(5)
