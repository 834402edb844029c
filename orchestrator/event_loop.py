"""The process's event loop: where agent runs wait for their model calls.

One asyncio loop per process runs on a daemon thread started on first use (and again in a forked
child, which inherits no threads). Runs are coroutines submitted to it, each in a copy of the
submitting thread's context (tracing span, Sentry scope, the task's event hooks carry over); a
thousand runs waiting on their models cost a thousand small tasks, not a thousand threads.

Blocking work a run must do (a database write, a Redis call, a sync tool or provider) goes to the
loop's executor through :func:`offload`, a bounded pool of :data:`EXECUTOR_THREADS` threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

__all__ = ["EXECUTOR_THREADS", "LoopTask", "ProcessLoop", "offload", "process_loop"]

T = TypeVar("T")

#: Threads of the loop's executor, for the blocking work of runs (database writes, Redis, sync calls).
EXECUTOR_THREADS = 32
#: Longest a thread waiting for a run on the loop stays in one uninterruptible wait (an exception
#: raised into the thread, such as Dramatiq's time limit, is delivered between two waits).
WAKE_EVERY_S = 1.0


class ProcessLoop:
    """An asyncio loop running on its own daemon thread."""

    def __init__(self, name: str = "agentq-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(EXECUTOR_THREADS, thread_name_prefix=f"{name}-blocking")
        )
        self.pid = os.getpid()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name=name, daemon=True)
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def submit(
        self, coroutine: Coroutine[Any, Any, T], context: contextvars.Context | None = None
    ) -> LoopTask[T]:
        """Run ``coroutine`` on the loop as a task in ``context`` (default: a copy of this thread's)."""
        return LoopTask(self.loop, coroutine, context if context is not None else contextvars.copy_context())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result in this thread.

        The wait is sliced, so an exception raised into this thread (a time limit, a shutdown cut-off)
        ends it; the coroutine is then cancelled and the exception propagates.
        """
        if threading.current_thread() is self.thread:
            raise RuntimeError("ProcessLoop.run called from the loop's own thread: await the coroutine")
        task = self.submit(coroutine)
        try:
            while True:
                try:
                    return task.future.result(WAKE_EVERY_S)
                except concurrent.futures.TimeoutError:
                    continue
        except BaseException:
            task.cancel()
            raise


class LoopTask(Generic[T]):
    """A coroutine running on a :class:`ProcessLoop`, seen from other threads.

    ``future`` gets its result or error (``concurrent.futures.CancelledError`` once cancelled); ``cancel``
    may be called from any thread, before or after the task started.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T], context: contextvars.Context
    ) -> None:
        self.loop = loop
        self.future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._task: asyncio.Task[T] | None = None
        self._cancelled = False
        self._coroutine: Coroutine[Any, Any, T] | None = coroutine
        loop.call_soon_threadsafe(self._start, context)

    def _start(self, context: contextvars.Context) -> None:
        coroutine, self._coroutine = self._coroutine, None
        assert coroutine is not None
        if self._cancelled:
            coroutine.close()
            self.future.set_exception(concurrent.futures.CancelledError())
            return
        self.future.set_running_or_notify_cancel()
        self._task = self.loop.create_task(coroutine, context=context)
        self._task.add_done_callback(self._copy_outcome)

    def _copy_outcome(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self.future.set_exception(concurrent.futures.CancelledError())
            return
        error = task.exception()
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(task.result())

    def cancel(self) -> None:
        """Cancel the task (from any thread); its future gets ``CancelledError`` unless it ended first."""
        self.loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if self._task is None:
            self._cancelled = True
        elif not self._task.done():
            self._task.cancel()


_lock = threading.Lock()
_loop: ProcessLoop | None = None


def process_loop() -> ProcessLoop:
    """This process's loop, started on first use (again after a fork)."""
    global _loop
    current = _loop
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _loop is None or _loop.pid != os.getpid():
            _loop = ProcessLoop()
        return _loop


async def offload(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` on the loop's executor, in a copy of the current context."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(None, functools.partial(context.run, call, *args, **kwargs))
