"""The attempts a worker process is running, shared by the middleware that watch them.

``TaskLifecycle`` registers an attempt when it claims a task and removes it when
the attempt ends; ``StalledJobs`` renews their leases and flags the ones whose
lease was lost; ``ShutdownDeadline`` cuts off the ones still running at the
deadline. The agent-kind actor reads its claim from here (and returns its result to Dramatiq).
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from config.errors import AgentQueueError
from orchestrator.cancel import CancelSignal
from taskstore import Claim


@dataclass
class Attempt:
    """One claimed task being run, by a worker thread or on the process's event loop."""

    claim: Claim
    #: The worker thread running it; None once its run was handed to the event loop.
    thread_id: int | None
    #: Set when the lease was lost (another worker took the task over): stop as soon as possible.
    lost: bool = False
    #: ``time.monotonic()`` when the task was claimed.
    started: float = field(default_factory=time.monotonic)
    #: When the run last asked the database whether it was cancelled (monotonic); the claim counts.
    cancel_checked_at: float = field(default_factory=time.monotonic)
    #: Set when the run must stop now (cancel requested, lease lost): it interrupts an in-flight model or
    #: tool call (see ``orchestrator.cancel``; ``CancelWatch`` sets it from Redis within moments).
    cancel: CancelSignal = field(default_factory=CancelSignal)
    #: An async kind's run that may go on on the event loop (it holds a slot of ``RunsInFlight``); False for a
    #: sync kind, or a message whose result Dramatiq passes on (a pipeline, callbacks): then it runs in its
    #: thread.
    on_loop: bool = False
    #: Dramatiq passes the actor's result on (a pipeline, callbacks): the actor returns it to Dramatiq.
    passes_result: bool = False
    #: What the agent kind's actor produced: its ``AttemptResult``, or the ``RunOnLoop`` to start; handed to
    #: ``TaskLifecycle`` here rather than returned to Dramatiq, which would log that it discards a value.
    returned: Any = None
    #: The message being processed (set by :meth:`AttemptRegistry.add`).
    message_id: str = ""

    @property
    def task_id(self) -> str:
        return self.claim.task.id


class MissingClaim(AgentQueueError):
    """An agent actor ran without a claimed task: the TaskLifecycle middleware is not installed."""


class AttemptObserver(Protocol):
    """Told when an attempt starts (right after the claim) and how it ended, in the worker thread.

    Tracing, metrics and Sentry observe attempts this way; an observer that raises is logged and ignored.
    """

    def attempt_started(self, attempt: Attempt) -> None: ...

    def attempt_handed_off(self, attempt: Attempt, run: Any) -> None:
        """The attempt's run went on on the event loop (a ``RunOnLoop``): its message is done with, the
        attempt is not; ``run.when_ended`` tells when it is. Called in the worker thread."""

    def attempt_ended(self, attempt: Attempt, outcome: str, error: BaseException | None) -> None:
        """``outcome``: completed, retried, postponed, awaiting_approval (the task waits for a person; the
        attempt is not counted), failed (dead-lettered), cancelled, lost, cut_off or released (its end could
        not be stored; it will be recovered as stalled)."""


class AttemptRegistry:
    """Thread-safe registry of this process's attempts, by message id.

    An attempt is *running* from its claim until its actor returns (or, for an async kind, until its
    run on the event loop ends), then *finishing* while its end is written. The process holds the
    leases of both (:meth:`held`), and only of those.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_message: dict[str, Attempt] = {}
        self._finishing: dict[int, Attempt] = {}
        self._on_loop: dict[int, Attempt] = {}
        self._observers: list[AttemptObserver] = []

    def observe(self, observer: AttemptObserver) -> None:
        """Call ``observer`` when attempts start and end (see :class:`AttemptObserver`)."""
        self._observers.append(observer)

    def add(self, message_id: str, claim: Claim) -> Attempt:
        attempt = Attempt(claim, threading.get_ident(), message_id=message_id)
        with self._lock:
            self._by_message[message_id] = attempt
        _current.set(attempt)
        for observer in self._observers:
            _notify(observer.attempt_started, attempt)
        return attempt

    def ended(self, attempt: Attempt, outcome: str, error: BaseException | None = None) -> None:
        """Tell the observers how ``attempt`` ended (called by ``TaskLifecycle`` once it has decided)."""
        for observer in self._observers:
            _notify(observer.attempt_ended, attempt, outcome, error)

    def pop(self, message_id: str) -> Attempt | None:
        """Forget the attempt of ``message_id`` (its lease is no longer renewed)."""
        _current.set(None)
        with self._lock:
            return self._by_message.pop(message_id, None)

    def finishing(self, message_id: str) -> Attempt | None:
        """The actor of ``message_id`` returned: its attempt stops *running* but stays held (its lease
        renewed) until :meth:`release`, while its end is written."""
        attempt = self.pop(message_id)
        if attempt is not None:
            with self._lock:
                self._finishing[id(attempt)] = attempt
        return attempt

    def get(self, message_id: str) -> Attempt | None:
        """The running attempt of ``message_id``, if any."""
        with self._lock:
            return self._by_message.get(message_id)

    def hand_off(self, message_id: str) -> Attempt | None:
        """The run of ``message_id`` goes on on the event loop: its attempt stays *running* (and held)
        without its message or thread, until :meth:`loop_run_ended`."""
        attempt = self.pop(message_id)
        if attempt is not None:
            attempt.thread_id = None
            with self._lock:
                self._on_loop[id(attempt)] = attempt
        return attempt

    def handed_off(self, attempt: Attempt, run: Any) -> None:
        """Tell the observers that ``attempt``'s run is on the event loop (``TaskLifecycle``)."""
        for observer in self._observers:
            _notify(observer.attempt_handed_off, attempt, run)

    def loop_run_ended(self, attempt: Attempt) -> None:
        """``attempt``'s run on the event loop ended: it is *finishing* until :meth:`release`."""
        with self._lock:
            self._on_loop.pop(id(attempt), None)
            self._finishing[id(attempt)] = attempt

    def release(self, attempt: Attempt) -> None:
        """Stop holding ``attempt``: its lease is no longer renewed."""
        with self._lock:
            self._finishing.pop(id(attempt), None)

    def running(self) -> list[Attempt]:
        """The attempts whose actor, or run on the event loop, is still running."""
        with self._lock:
            return [*self._by_message.values(), *self._on_loop.values()]

    def held(self) -> list[Attempt]:
        """The attempts whose lease this process holds: running and finishing ones."""
        with self._lock:
            return [*self._by_message.values(), *self._on_loop.values(), *self._finishing.values()]

    def mark_lost(self, checked: list[Attempt], held_task_ids: set[str]) -> list[Attempt]:
        """Flag the attempts among ``checked`` whose task is not in ``held_task_ids`` (the renewal's
        answer for them); returns the newly lost ones."""
        lost = []
        for attempt in checked:
            if attempt.task_id not in held_task_ids and not attempt.lost:
                attempt.lost = True
                attempt.cancel.set("lease lost")  # stop an in-flight call too: the task is another's now
                lost.append(attempt)
        return lost


def _notify(hook: Any, *args: Any) -> None:
    try:
        hook(*args)
    except Exception:
        logging.getLogger("agentq.attempts").exception("attempt observer %r raised; ignored", hook)


_current: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("agentq_attempt", default=None)


def current_attempt(task_id: str) -> Attempt:
    """The attempt this thread runs for ``task_id``."""
    attempt = _current.get()
    if attempt is None or attempt.task_id != task_id:
        raise MissingClaim(f"no claim for task {task_id!r}: is middleware.TaskLifecycle on the broker?")
    return attempt


def current_claim(task_id: str) -> Claim:
    """The claim the worker holds for ``task_id`` in this thread."""
    return current_attempt(task_id).claim


_worker_ids: dict[int, str] = {}


def process_worker_id() -> str:
    """This process's worker identity (host, pid and a random suffix), stored with the tasks it leases."""
    pid = os.getpid()
    if pid not in _worker_ids:
        _worker_ids[pid] = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    return _worker_ids[pid]
