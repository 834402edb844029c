"""Group commit: writes that concurrent threads submit at the same moment share one statement.

A worker runs many threads, and under load several of them claim or finish a task at
once. Each such write costs Postgres a transaction (parse, plan, WAL flush) and the
worker a round trip; written together they cost little more than one. The first thread
to submit becomes a *leader*: it writes its own item at once, alone, with the ordinary
single-row statement, so an idle system pays nothing. Up to ``max_in_flight`` writes run
at once; items submitted while that many are in flight wait, and when a write ends its
leader hands over to the oldest waiter, which writes every waiting item in one batch
statement. There is no timer and no background thread: a batch is exactly what arrived
while the writes before it were in flight.

Every caller gets its own item's result or exception. When a batch fails for a reason
other than the server being unreachable (bad data in one item, say), each item is
retried alone so one bad item cannot fail the others. A waiter waits at most
``wait_timeout_s`` for the writes ahead of it: past that (a leader's statement hangs) it
gets the ``abandoned`` error instead of blocking for ever.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from taskstore.errors import StoreUnavailable

In = TypeVar("In")
Out = TypeVar("Out")

#: Most items written by one batch statement.
MAX_BATCH = 64
#: Writes in flight at once before items start to wait for a batch.
MAX_IN_FLIGHT = 1


class _Slot(Generic[In, Out]):
    """One submitted item and, once written, its outcome."""

    __slots__ = ("done", "error", "item", "lead", "result", "wakeup")

    def __init__(self, item: In) -> None:
        self.item = item
        #: Held from the moment the slot waits; released to wake it (cheaper than an Event).
        self.wakeup: threading.Lock | None = None
        self.lead = False
        self.done = False
        self.result: Out | None = None
        self.error: BaseException | None = None

    def outcome(self) -> Out:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit(Generic[In, Out]):
    """Writes submitted items alone when nothing else is in flight, together when threads coincide.

    Args:
        write_one: Writes one item; used when an item has the database to itself.
        write_many: Writes several items in one statement; returns their results in order.
        max_batch: Most items per ``write_many`` call.
        max_in_flight: Writes running at once before submitted items wait to be batched.
        unreachable: Errors of ``write_many`` that every item would meet alone (the server is
            down): each caller gets a copy instead of a retry of its item.
        abandoned: The error for items whose writing thread was interrupted mid-write, or that
            waited longer than ``wait_timeout_s``.
        wait_timeout_s: Longest a submitted item waits for other threads' writes (``None``: no limit).
            Its write may still land afterwards, as after any timeout.
    """

    def __init__(
        self,
        write_one: Callable[[In], Out],
        write_many: Callable[[Sequence[In]], list[Out]],
        *,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
        unreachable: tuple[type[Exception], ...] = (StoreUnavailable,),
        abandoned: Callable[[str], Exception] = StoreUnavailable,
        wait_timeout_s: float | None = None,
    ) -> None:
        self._write_one = write_one
        self._write_many = write_many
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._unreachable = unreachable
        self._abandoned = abandoned
        self._wait_timeout_s = wait_timeout_s
        self._lock = threading.Lock()
        self._waiting: deque[_Slot[In, Out]] = deque()
        self._in_flight = 0

    def submit(self, item: In) -> Out:
        """Write ``item`` (possibly together with other threads' items) and return its result."""
        slot: _Slot[In, Out] = _Slot(item)
        with self._lock:
            if self._in_flight >= self._max_in_flight:
                slot.wakeup = threading.Lock()
                slot.wakeup.acquire()
                self._waiting.append(slot)
            else:
                self._in_flight += 1
                slot.lead = True
        if not slot.lead:
            self._wait(slot)
            if not slot.lead:
                return slot.outcome()
        self._lead(slot)
        return slot.outcome()

    def _wait(self, slot: _Slot[In, Out]) -> None:
        assert slot.wakeup is not None
        try:
            woken = slot.wakeup.acquire(timeout=-1 if self._wait_timeout_s is None else self._wait_timeout_s)
        except BaseException:
            # Interrupted (e.g. a time limit): leave the queue if not yet taken, hand on a lead.
            with self._lock:
                if slot in self._waiting:
                    self._waiting.remove(slot)
                    raise
            if slot.lead:
                slot.error = self._abandoned("write abandoned: its thread was interrupted")
                self._hand_over([])
            raise
        if not woken:
            self._give_up(slot)

    def _give_up(self, slot: _Slot[In, Out]) -> None:
        """After ``wait_timeout_s``: leave the queue, or stop waiting for the batch that took ``slot``."""
        with self._lock:
            if slot.lead or slot.done:
                return  # written, or handed the lead, just as the wait ended
            if slot in self._waiting:
                self._waiting.remove(slot)
        raise self._abandoned(f"no result within {self._wait_timeout_s:g} s: the write ahead of it hangs")

    def _lead(self, slot: _Slot[In, Out]) -> None:
        """Write ``slot`` and, if it was handed the lead, everything that waited with it."""
        batch = [slot]
        with self._lock:
            while self._waiting and len(batch) < self._max_batch:
                batch.append(self._waiting.popleft())
        try:
            self._write(batch)
        finally:
            self._hand_over([other for other in batch if other is not slot])

    def _hand_over(self, finished: list[_Slot[In, Out]]) -> None:
        """Wake the finished waiters and pass the lead to the oldest waiter, if any."""
        with self._lock:
            successor = self._waiting.popleft() if self._waiting else None
            if successor is None:
                self._in_flight = 0
            else:
                successor.lead = True
        for other in finished:
            if not other.done:
                other.error = self._abandoned("write abandoned: the thread writing it was interrupted")
            _wake(other)
        if successor is not None:
            _wake(successor)

    def _write(self, batch: list[_Slot[In, Out]]) -> None:
        """Fill in every slot's outcome; never raises for an item's own failure."""
        if len(batch) > 1:
            try:
                results = self._write_many([slot.item for slot in batch])
            except self._unreachable as exc:
                for slot in batch:
                    slot.error, slot.done = copy.copy(exc), True
                return
            except Exception:  # one bad item: give each its own outcome
                pass
            else:
                for slot, result in zip(batch, results, strict=True):
                    slot.result, slot.done = result, True
                return
        for slot in batch:
            try:
                slot.result = self._write_one(slot.item)
            except Exception as exc:
                slot.error = exc
            slot.done = True


def _wake(slot: _Slot[In, Out]) -> None:
    assert slot.wakeup is not None
    slot.wakeup.release()
