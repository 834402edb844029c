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


def call_abandonable(call: Callable[[], T], cancel: CancelSignal | None, what: str) -> T:
    """``call()``, abandoned as soon as ``cancel`` is set: then :class:`RunCancelled` is raised at once.

    Without a signal the call runs in this thread. With one it runs in a daemon thread (in a copy of this
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

    threading.Thread(target=target, name=f"abandonable {what}", daemon=True).start()
    wait(finished, None, cancel)
    if not outcome:
        raise RunCancelled(f"during {what}")
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[return-value]
    assert isinstance(value, BaseException)
    raise value
