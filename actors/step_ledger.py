"""The step ledger of one attempt, kept in the task store (``AGENTQ_STEP_LEDGER``, on by default).

:class:`StoreLedger` is what the orchestrator records its steps through
(:class:`orchestrator.ledger.StepLedger`): each write is one compare-and-set of the store
(``start_step``/``finish_step``/``record_step``) keyed by the task, this attempt's run, the task's firing
and the step's ``seq``. A tool call is written ``started`` before the tool runs (what makes resuming safe)
and ended after it. A model call is written once, when it ends, started and ended together (a call cut off
by a crash is requested again, with or without a ``started`` row), and the run's final answer with the
task's completion (the actor passes :attr:`StoreLedger.last` on in its result): a one-step run costs no
write of its own. A write the store refuses means this attempt no longer holds the task (it was recovered
as stalled and taken over, cancelled or finished elsewhere): the attempt is flagged lost and the run stops
before the call it was about to make. A store that cannot be reached fails the attempt as retryable; the
next attempt resumes from what was recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from middleware.metrics import RUNS_RESUMED, STEPS_REPLAYED
from orchestrator.ledger import LLM, NoLedger, RecordedStep, StepNotRecorded
from taskstore import Claim, Step, StepKind, StepRecord, StepStatus, StoreUnavailable, TaskStore, utcnow
from taskstore.rules import approval_time

__all__ = ["StoreLedger", "attempt_ledger"]

T = TypeVar("T")


class StoreLedger:
    """The ledger of the attempt ``claim`` (task, run, firing) in ``store``.

    Args:
        store: The task store.
        claim: The attempt: its task (and firing), run and agent.
        lost: Called when the store refuses a write: the attempt no longer holds the task.
        clock: The time written on each step.
    """

    def __init__(
        self,
        store: TaskStore,
        claim: Claim,
        *,
        lost: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.task_id, self.run_id, self.firing = claim.task.id, claim.run_id, claim.task.firing
        self.scope = f"{self.task_id}:{self.firing}"
        self.queue = claim.agent.kind if claim.agent is not None else "unknown"
        self._recorded = claim.steps
        #: The run's final answer, not written yet: the actor hands it to the task's completion.
        self.last: StepRecord | None = None
        #: The model call under way, written once it ends.
        self._pending: StepRecord | None = None
        self._lost = lost
        self._clock = clock
        #: The run that last wrote each step, as read or written: a step left unfinished by another run is
        #: taken over only from that run (a third run's write in between makes the takeover fail).
        self._writers = {step.seq: step.run_id for step in claim.steps}

    def __repr__(self) -> str:
        return f"StoreLedger(task={self.task_id!r}, run={self.run_id!r}, firing={self.firing})"

    def steps(self) -> Sequence[Step]:
        """The steps earlier attempts recorded, as the claim read them (no step can change since: only the
        run holding the task writes them)."""
        return self._recorded

    def start(self, seq: int, kind: str, name: str, input: Mapping[str, Any]) -> None:
        if kind == LLM:  # written with its end: a model call cut off by a crash is made again either way
            self._pending = StepRecord(
                self.firing,
                seq,
                StepKind.LLM,
                name,
                dict(input),
                self._clock(),
                StepStatus.STARTED,
                None,
                self._clock(),
                replaces=self._writers.get(seq),
            )
            return
        written = self._write(
            seq,
            lambda: self.store.start_step(
                self.task_id,
                self.run_id,
                firing=self.firing,
                seq=seq,
                kind=StepKind(kind),
                name=name,
                input=dict(input),
                replaces=self._writers.get(seq),
                now=self._clock(),
            ),
        )
        self._check(seq, written, "started")
        self._writers[seq] = self.run_id

    def complete(
        self,
        seq: int,
        output: Mapping[str, Any],
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | None = None,
        last: bool = False,
    ) -> None:
        usage = {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost_usd}
        record = self._ended(seq, StepStatus.COMPLETED, output=dict(output), **usage)
        if record is not None and last:  # written with the task's completion, in the same transaction
            self.last = record
        elif record is not None:
            self._record(record)
        else:
            self._finish(seq, StepStatus.COMPLETED, output=dict(output), **usage)

    def fail(self, seq: int, error: str) -> None:
        record = self._ended(seq, StepStatus.FAILED, error=error)
        if record is not None:
            self._record(record)
        else:
            self._finish(seq, StepStatus.FAILED, error=error)

    def _ended(self, seq: int, status: StepStatus, **end: Any) -> StepRecord | None:
        """Model call ``seq`` as ended now with ``status``; ``None`` for a step already written started."""
        pending, self._pending = self._pending, None
        if pending is None or pending.seq != seq:
            return None
        return replace(pending, status=status, finished_at=self._clock(), **end)

    def _record(self, record: StepRecord) -> None:
        written = self._write(record.seq, lambda: self.store.record_step(self.task_id, self.run_id, record))
        self._check(record.seq, written, record.status)
        self._writers[record.seq] = self.run_id

    def _finish(self, seq: int, status: StepStatus, **end: Any) -> None:
        end.setdefault("output", None)
        written = self._write(
            seq,
            lambda: self.store.finish_step(
                self.task_id,
                self.run_id,
                firing=self.firing,
                seq=seq,
                status=status,
                now=self._clock(),
                **end,
            ),
        )
        self._check(seq, written, status)

    def await_approval(self, seq: int, name: str, input: Mapping[str, Any]) -> None:
        """Record tool step ``seq`` as awaiting a person's approval (``ApprovalLedger``); the request's time
        is the step's ``approval["requested_at"]``."""
        now = self._clock()
        written = self._write(
            seq,
            lambda: self.store.await_step(
                self.task_id,
                self.run_id,
                firing=self.firing,
                seq=seq,
                name=name,
                input=dict(input),
                approval={"requested_at": approval_time(now)},
                replaces=self._writers.get(seq),
                now=now,
            ),
        )
        self._check(seq, written, "awaiting approval")
        self._writers[seq] = self.run_id

    def resumed(self, replayed: Sequence[RecordedStep]) -> None:
        """Count the resumed run and the steps it does not repeat (``agentq_runs_resumed_total``,
        ``agentq_steps_replayed_total``)."""
        RUNS_RESUMED.labels(self.queue).inc()
        for kind, count in Counter(step.kind for step in replayed).items():
            STEPS_REPLAYED.labels(self.queue, str(kind)).inc(count)

    def _write(self, seq: int, write: Callable[[], T]) -> T:
        try:
            return write()
        except StoreUnavailable as exc:
            raise StepNotRecorded(
                f"task {self.task_id}: step {seq} could not be recorded: {exc}", retryable=True
            ) from exc

    def _check(self, seq: int, written: bool, status: str) -> None:
        if written:
            return
        self._lost()
        raise StepNotRecorded(
            f"task {self.task_id}: step {seq} was not recorded {status}: run {self.run_id} no longer holds"
            f" the task in firing {self.firing} (it was recovered as stalled, cancelled or finished), or"
            " another attempt took the step over; this attempt stops",
            retryable=False,
        )


def attempt_ledger(
    store: TaskStore, claim: Claim, *, enabled: bool, lost: Callable[[], None]
) -> StoreLedger | NoLedger:
    """The ledger of one attempt: in the store, or (``AGENTQ_STEP_LEDGER=false``) one that records nothing
    but still scopes the tools' idempotency keys to the task's firing."""
    if enabled:
        return StoreLedger(store, claim, lost=lost)
    return NoLedger(f"{claim.task.id}:{claim.task.firing}")
