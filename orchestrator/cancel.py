"""Stopping a run in the middle of a model call or a tool call.

A :class:`CancelSignal` is a :class:`threading.Event` set once, from any thread, when the run must stop now
(``remove_job`` asked for it, or the worker lost the task). The loop checks it between steps like
``should_stop``; while a call is in flight it does not wait for the call to end:

* a model call is awaited on the run's event loop (:func:`until_cancelled`) together with the signal; on the
  signal the call's task is cancelled, which aborts its HTTP request, and the run stops at once
  (:class:`RunCancelled`). A provider without an async call runs in an executor thread and is abandoned;
* a sync tool runs in a helper thread already (its timeout); it is given the signal
  (``current_tool_call().cancelled``) so that a long tool can stop early, and the run does not wait for it.
  An async tool is cancelled like a model call.

Waiting costs nothing while nothing happens: the signal wakes the waiting run itself (no polling).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from orchestrator.errors import RunCancelled

__all__ = ["CancelSignal", "Settable", "until_cancelled"]

T = TypeVar("T")


class Settable(Protocol):
    """What a :class:`CancelSignal` wakes: anything with ``set()`` (a ``threading.Event``, a loop's event)."""

    def set(self) -> None: ...


class CancelSignal(threading.Event):
    """A run's "stop now": an event that also wakes the events registered with :meth:`waking`."""

    def __init__(self) -> None:
        super().__init__()
        self._wake_lock = threading.Lock()
        self._woken: set[Settable] = set()
        #: Why the run was stopped, for logs (``"cancel requested"``, ``"lease lost"``).
        self.reason = ""

    def set(self, reason: str = "cancel requested") -> None:
        """Stop the run; wake every waiter. Setting it again changes nothing."""
        with self._wake_lock:
            if self.is_set():
                return
            self.reason = reason
            super().set()
            woken = list(self._woken)
        for event in woken:
            event.set()

    @contextmanager
    def waking(self, event: Settable) -> Iterator[None]:
        """While in the block, setting this signal also sets ``event`` (at once if it is set already)."""
        with self._wake_lock:
            self._woken.add(event)
            already = self.is_set()
        if already:
            event.set()
        try:
            yield
        finally:
            with self._wake_lock:
                self._woken.discard(event)


class _Canceller:
    """Cancels ``work`` on its loop when a :class:`CancelSignal` is set (from any thread)."""

    def __init__(self, work: asyncio.Future[object]) -> None:
        self.loop = asyncio.get_running_loop()
        self.work = work
        #: Whether the signal cancelled the work (an answer already in is kept).
        self.fired = False

    def set(self) -> None:
        self.loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if not self.work.done():
            self.fired = True
            self.work.cancel()


async def until_cancelled(call: Awaitable[T], cancel: CancelSignal | None, what: str) -> T:
    """Await ``call``; as soon as ``cancel`` is set it is cancelled (an HTTP request is aborted) and
    :class:`RunCancelled` is raised. An answer that arrives together with the signal is still returned
    (the loop stops before its next step)."""
    if cancel is None:
        return await call
    if cancel.is_set():
        if inspect.iscoroutine(call):
            call.close()
        raise RunCancelled(f"before {what}")
    work = asyncio.ensure_future(call)
    canceller = _Canceller(work)  # type: ignore[arg-type]
    with cancel.waking(canceller):
        try:
            return await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if canceller.fired and (current is None or not current.cancelling()):
                raise RunCancelled(f"during {what}") from None
            raise  # the run itself was cancelled (its time limit, the shutdown cut-off)
