"""Stopping a run in the middle of a model call or a tool call.

A :class:`CancelSignal` is a :class:`threading.Event` set once, from any thread, when the run must stop now
(``remove_job`` asked for it, or the worker lost the task). The loop checks it between steps like
``should_stop``; while a call is in flight it does not wait for the call to end:

* a model call runs in a helper thread (:func:`call_abandonable`) and the run's thread waits for either
  its answer or the signal. On the signal the run stops at once (:class:`RunCancelled`); the HTTP request
  is abandoned: nothing reads its answer, and its thread ends when the provider answers or the call's
  timeout expires (the SDKs cannot abort a request from another thread);
* a tool runs in a helper thread already (its timeout); it is given the signal
  (``current_tool_call().cancelled``) so that a long tool can stop early, and the run does not wait for it.

Waiting costs nothing while nothing happens: the signal wakes the waiting thread itself (no polling); a
wait still returns every :data:`WAKE_EVERY_S` so an exception raised into the thread (Dramatiq's time
limit, the shutdown deadline) is delivered.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from orchestrator.errors import RunCancelled

__all__ = ["WAKE_EVERY_S", "CancelSignal", "call_abandonable", "wait"]

T = TypeVar("T")

#: Longest a waiting run's thread stays in one uninterruptible wait.
WAKE_EVERY_S = 1.0


class CancelSignal(threading.Event):
    """A run's "stop now": an event that also wakes the events registered with :meth:`waking`."""

    def __init__(self) -> None:
        super().__init__()
        self._wake_lock = threading.Lock()
        self._woken: set[threading.Event] = set()
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
    def waking(self, event: threading.Event) -> Iterator[None]:
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


def wait(event: threading.Event, timeout_s: float | None, cancel: CancelSignal | None = None) -> None:
    """Wait until ``event`` is set, ``timeout_s`` passed (None: no limit) or ``cancel`` is set; the caller
    tells which from its own state. Waits in slices of :data:`WAKE_EVERY_S`, so an exception raised into
    the thread is delivered between two slices."""
    if cancel is None:
        _wait(event, timeout_s)
        return
    with cancel.waking(event):
        _wait(event, timeout_s)


def _wait(event: threading.Event, timeout_s: float | None) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not event.is_set():
        left = WAKE_EVERY_S if deadline is None else min(deadline - time.monotonic(), WAKE_EVERY_S)
        if left <= 0:
            return
        event.wait(left)


#: Seconds an idle helper thread waits for its next call before it ends.
HELPER_IDLE_S = 60.0


class _Helpers:
    """Daemon threads that make abandonable calls, reused: starting a thread costs about 0.2 ms per call,
    handing a call to an idle one a few tens of microseconds. A helper whose call was abandoned is busy
    until that call returns; the pool grows as needed and idle helpers end after :data:`HELPER_IDLE_S`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Helper] = []

    def run(self, job: Callable[[], None]) -> None:
        """Run ``job`` on an idle helper, or on a new one."""
        with self.lock:
            helper = self.idle.pop() if self.idle else None
        if helper is None:
            helper = _Helper(self)
            helper.start()
        helper.jobs.put(job)


class _Helper(threading.Thread):
    def __init__(self, pool: _Helpers) -> None:
        super().__init__(name="agentq-abandonable-call", daemon=True)
        self.pool = pool
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=HELPER_IDLE_S)
            except queue.Empty:
                with self.pool.lock:
                    if self in self.pool.idle:  # nobody took it meanwhile: end
                        self.pool.idle.remove(self)
                        return
                continue  # taken just now: its call is on the way
            job()
            with self.pool.lock:
                self.pool.idle.append(self)


_helpers = _Helpers()


def call_abandonable(call: Callable[[], T], cancel: CancelSignal | None, what: str) -> T:
    """``call()``, abandoned as soon as ``cancel`` is set: then :class:`RunCancelled` is raised at once.

    Without a signal the call runs in this thread. With one it runs on a helper thread (in a copy of this
    thread's context, so tracing spans and the like carry over) and its result or error is returned or
    raised here; an answer that arrives together with the signal is still returned (the loop stops before
    its next step).
    """
    if cancel is None:
        return call()
    if cancel.is_set():
        raise RunCancelled(f"before {what}")
    outcome: list[tuple[bool, object]] = []
    finished = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome.append((True, context.run(call)))
        except BaseException as exc:  # handed to the waiting thread
            outcome.append((False, exc))
        finally:
            finished.set()

    _helpers.run(target)
    wait(finished, None, cancel)
    if not outcome:
        raise RunCancelled(f"during {what}")
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[return-value]
    assert isinstance(value, BaseException)
    raise value
