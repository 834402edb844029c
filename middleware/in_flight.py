"""Agent runs in flight on the process's event loop, not on worker threads.

An agent kind declared ``async def`` returns a :class:`RunOnLoop` from its actor instead of running:
``TaskLifecycle`` has claimed the task (the lease in the database is what protects the run), hands
the coroutine to the loop (:mod:`orchestrator.event_loop`) and lets Dramatiq acknowledge the message.
The worker thread is free again within a millisecond or so: threads do the short database and Redis
work, and ``QUEUE_CONCURRENCY`` runs wait on their models at once per process.

:class:`RunsInFlight` holds the process's slots: a worker thread takes one before it claims a task of
an async kind and waits while all are taken (so the process fetches nothing more: back-pressure);
the slot is given back once the run's end is written. When a run ends, its end is written on one of
a few finisher threads, in the context the run started in (its tracing span, its Sentry scope), by the
same code that ends a thread's run. A crash loses nothing: the task's lease expires and the stalled-job
path runs it again, exactly as for a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from dramatiq.middleware.time_limit import TimeLimitExceeded

from middleware.attempts import Attempt
from middleware.failure_policy import time_limit_message
from orchestrator.event_loop import LoopTask, process_loop

logger = logging.getLogger("agentq.lifecycle")

#: Longest a worker thread waits for a free slot in one wait (it gives up at shutdown).
SLOT_WAIT_SLICE_S = 0.25
#: Threads that write the ends of runs (the store groups concurrent writes into one statement).
FINISHER_THREADS = 8

#: Called once a run ended: its result, or the error that ended it.
EndCallback = Callable[[Any, BaseException | None], None]


class RunCutOff(Exception):
    """The run was still in flight at the shutdown deadline (``ShutdownDeadline``)."""


class RunOnLoop:
    """What an async agent kind's actor returns: the run, to be started on the loop once claimed.

    Args:
        coroutine: The kind's coroutine (``fn(job)``), not started yet.
        time_limit_ms: The actor's time limit, or None for the default.
    """

    def __init__(self, coroutine: Coroutine[Any, Any, Any], time_limit_ms: int | None = None) -> None:
        self.coroutine = coroutine
        self.time_limit_ms = time_limit_ms
        self._lock = threading.Lock()
        self._ended: tuple[Any, BaseException | None] | None = None
        self._callbacks: list[EndCallback] = []

    def when_ended(self, callback: EndCallback) -> None:
        """Call ``callback(result, error)`` once the run's end is written (at once if it is already)."""
        with self._lock:
            if self._ended is None:
                self._callbacks.append(callback)
                return
            ended = self._ended
        _call(callback, *ended)

    def ended(self, result: Any, error: BaseException | None) -> None:
        with self._lock:
            self._ended = (result, error)
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback, result, error)

    def discard(self) -> None:
        """Never started (the attempt vanished): close the coroutine."""
        self.coroutine.close()


def _call(callback: EndCallback, result: Any, error: BaseException | None) -> None:
    try:
        callback(result, error)
    except Exception:
        logger.exception("callback %r at the end of a run raised; ignored", callback)


#: A run's end waiting for a finisher thread: the run's context, then ``RunsInFlight._finish``'s arguments.
_End = tuple[contextvars.Context, Attempt, RunOnLoop, EndCallback, Any, BaseException | None]


class RunsInFlight:
    """The runs this process keeps on its event loop, at most ``capacity`` at once.

    Args:
        capacity: Runs in flight per process (``QUEUE_CONCURRENCY``).
        default_time_limit_ms: The time limit of a run whose actor sets none (``AGENTQ_TASK_TIME_LIMIT_MS``);
            None: no limit.
    """

    def __init__(self, capacity: int, *, default_time_limit_ms: int | None = None) -> None:
        self.capacity = capacity
        self.default_time_limit_ms = default_time_limit_ms
        # Free slots are tokens in a queue, the ends waiting to be written are items in another:
        # ``SimpleQueue`` hands over in C, with one wake-up, where a ``Semaphore`` or a thread pool's
        # futures take Python-level conditions (measured: half the CPU per run of the hand-offs).
        self._free: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(capacity):
            self._free.put(None)
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._runs: dict[int, tuple[LoopTask[Any], list[bool]]] = {}
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._ends: queue.SimpleQueue[_End | None] = queue.SimpleQueue()
        self._finishers: list[threading.Thread] = []

    # --- slots --------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Wait for a free slot; False if the process shuts down meanwhile (the message goes back)."""
        while not self._closing.is_set():
            try:
                self._free.get(timeout=SLOT_WAIT_SLICE_S)
            except queue.Empty:
                continue
            with self._lock:
                self._in_flight += 1
            return True
        return False

    def release(self) -> None:
        """Give a slot back.

        Raises:
            ValueError: More slots given back than taken (a bug: it would raise the capacity).
        """
        with self._lock:
            if self._in_flight <= 0:
                raise ValueError("RunsInFlight.release: no slot is taken")
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()
        self._free.put(None)

    @property
    def in_flight(self) -> int:
        """Slots taken: runs on the loop and claims about to hand theirs over."""
        with self._lock:
            return self._in_flight

    # --- runs ---------------------------------------------------------------------------

    def start(
        self, attempt: Attempt, run: RunOnLoop, finish: Callable[[Any, BaseException | None], None]
    ) -> None:
        """Start ``run`` (its slot already taken) in a copy of this thread's context; ``finish(result,
        error)`` writes its end on a finisher thread, in that context, then the slot is given back."""
        context = contextvars.copy_context()
        limit_ms = run.time_limit_ms if run.time_limit_ms is not None else self.default_time_limit_ms
        cut_off = [False]
        task = process_loop().submit(_bounded(run.coroutine, limit_ms), context)
        with self._lock:
            self._runs[id(attempt)] = (task, cut_off)

        def done(future: concurrent.futures.Future[Any]) -> None:
            error = future.exception()
            if isinstance(error, concurrent.futures.CancelledError) and cut_off[0]:
                error = RunCutOff(f"task {attempt.task_id} still running at the shutdown deadline")
            result = None if error is not None else future.result()
            self._start_finishers()
            self._ends.put((context, attempt, run, finish, result, error))

        task.future.add_done_callback(done)

    def _finish(
        self,
        attempt: Attempt,
        run: RunOnLoop,
        finish: EndCallback,
        result: Any,
        error: BaseException | None,
    ) -> None:
        try:
            finish(result, error)
        except Exception:
            logger.exception("[AgentTaskQueue] Job %s: writing the end of its run failed", attempt.task_id)
        finally:
            with self._lock:
                self._runs.pop(id(attempt), None)
            run.ended(result, error)
            self.release()

    def _start_finishers(self) -> None:
        """Start the finisher threads unless they run (first end, or the first since a shutdown)."""
        if self._finishers:
            return
        with self._lock:
            while len(self._finishers) < FINISHER_THREADS:
                thread = threading.Thread(
                    target=self._write_ends, name=f"agentq-run-end-{len(self._finishers)}", daemon=True
                )
                thread.start()
                self._finishers.append(thread)

    def _write_ends(self) -> None:
        """A finisher thread: write each end given to it, in its run's context, until told to stop."""
        while (end := self._ends.get()) is not None:
            context, attempt, run, finish, result, error = end
            try:
                context.run(self._finish, attempt, run, finish, result, error)
            except Exception:  # the thread must outlive any bug: later ends still need writing
                logger.exception("[AgentTaskQueue] Job %s: ending its run failed", attempt.task_id)

    def cut_off(self, attempt: Attempt) -> bool:
        """Stop ``attempt``'s run now (shutdown deadline); False if it is not on the loop."""
        with self._lock:
            entry = self._runs.get(id(attempt))
        if entry is None:
            return False
        task, cut_off = entry
        cut_off[0] = True
        task.cancel()
        return True

    # --- shutdown -----------------------------------------------------------------------

    def open(self) -> None:
        """A worker starts (again): slots may be taken."""
        self._closing.clear()

    def close(self) -> None:
        """Shutdown began: threads waiting for a slot give up (their messages go back to Redis)."""
        self._closing.set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every run ended and its end is written; False if some are left after ``timeout_s``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout_s)

    def shutdown(self) -> None:
        """Stop the finisher threads once the ends given to them are written (after :meth:`wait_idle`)."""
        with self._lock:
            finishers, self._finishers = self._finishers, []
        for _ in finishers:
            self._ends.put(None)
        for thread in finishers:
            thread.join()
        if not self._ends.empty():  # a run ended while they stopped: its end behind the stops is written too
            self._start_finishers()


async def _bounded(coroutine: Coroutine[Any, Any, Any], limit_ms: int | None) -> Any:
    """Await ``coroutine``, ended by Dramatiq's ``TimeLimitExceeded`` after ``limit_ms`` (as a thread is)."""
    if not limit_ms:
        return await coroutine
    async with asyncio.timeout(limit_ms / 1000) as deadline:
        try:
            return await coroutine
        except asyncio.CancelledError:
            if deadline.expired():
                raise TimeLimitExceeded(time_limit_message(limit_ms)) from None
            raise
