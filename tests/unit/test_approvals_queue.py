"""Approvals through the queue on a StubBroker and the in-memory store (scripted agents): waiting, the
decisions, the views, the failure policy, the reconciler's timeout and the command line's arguments."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actors.cli.commands import build_parser
from actors.errors import NotAwaitingApproval
from middleware import Reconciler
from middleware.failure_policy import Outcome, decide
from orchestrator.approvals import ApprovalRequired
from taskstore import InMemoryTaskStore, RunStatus, StepStatus, Task, TaskStatus, utcnow
from tests.fakes.tools import lines
from tests.harness import Harness, stub_harness

LIFECYCLE = "agentq.lifecycle"
TOOLS = ("tests.fakes.approval_tools:tools",)


@pytest.fixture
def app() -> Iterator[Harness]:
    with stub_harness(InMemoryTaskStore(), tools=TOOLS) as harness:
        yield harness


def refund_task(app: Harness, refunds: Path, *then: dict[str, Any]) -> str:
    agent = app.agent(allowed_tools=("refund",))
    script = [{"tool": "refund", "arguments": {"path": str(refunds), "amount": 12}}, *then]
    return app.task(agent, title="Refund order 7", context={"script": script})


def run(app: Harness) -> None:
    with app.worker() as worker:
        app.drain(worker)


def test_a_waiting_task_is_shown_counted_and_resumes_after_an_approval(
    app: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refunds = tmp_path / "refunds.txt"
    task_id = refund_task(app, refunds, {"answer": "Refunded 12."})
    app.queue.add_task(task_id)

    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        run(app)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.AWAITING_APPROVAL and job.attempts_made == 0
    assert job.pending_approval is not None and job.pending_approval.tool == "refund"
    assert job.pending_approval.arguments == {"path": str(refunds), "amount": 12}
    stats = app.queue.get_queue_stats()
    assert (stats.awaiting_approval, stats.active, stats.waiting, stats.failed) == (1, 0, 0, 0)
    assert f"[AgentTaskQueue] Job {task_id} awaiting approval of tool 'refund' (step 1)" in caplog.text
    assert not any("failed" in message.lower() for message in caplog.messages)  # not even Dramatiq's error

    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        app.queue.approve(task_id, decided_by="ana")
    run(app)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED and job.pending_approval is None
    assert len(lines(refunds)) == 1 and job.attempts_made == 1
    assert [run.status for run in job.runs] == [RunStatus.AWAITING_APPROVAL, RunStatus.COMPLETED]
    assert f"[AgentTaskQueue] Job {task_id} approved by ana; queued to resume" in caplog.text


def test_a_second_call_in_the_same_run_waits_for_its_own_approval(app: Harness, tmp_path: Path) -> None:
    refunds = tmp_path / "refunds.txt"
    again = {"tool": "refund", "arguments": {"path": str(refunds), "amount": 5}}
    task_id = refund_task(app, refunds, again, {"answer": "Two refunds."})
    app.queue.add_task(task_id)
    run(app)
    app.queue.approve(task_id)
    run(app)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.AWAITING_APPROVAL
    assert job.pending_approval is not None and job.pending_approval.seq == 3 and len(lines(refunds)) == 1

    app.queue.reject(task_id, "one refund is enough")
    run(app)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED and len(lines(refunds)) == 1
    assert [step.status for step in app.store.get_steps(task_id)] == [StepStatus.COMPLETED] * 5


def test_a_decision_on_a_task_that_waits_for_nothing_is_refused(app: Harness, tmp_path: Path) -> None:
    task_id = refund_task(app, tmp_path / "refunds.txt")

    with pytest.raises(NotAwaitingApproval) as raised:
        app.queue.approve(task_id)

    assert (raised.value.task_id, raised.value.from_status) == (task_id, "pending")
    assert app.queue.list_approvals() == []


def test_an_approval_required_is_not_a_failure_the_task_waits() -> None:
    from tests.unit.test_failure_policy import task

    decision = decide(
        ApprovalRequired("refund", 1, {}),
        task(attempts=3),
        max_attempts=3,
        backoff_base_ms=2000,
        max_postpones=0,
    )

    assert decision.outcome is Outcome.AWAIT_APPROVAL and decision.delay_ms == 0


class FlakyStore(InMemoryTaskStore):
    """Expiring one given task raises (a row the database refuses): the others must still be expired."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: str | None = None

    def expire_approval(
        self, task_id: str, *, waiting_before: datetime, error: str, now: datetime
    ) -> Task | None:
        if task_id == self.refuse:
            raise ValueError(f"cannot expire {task_id}")
        return super().expire_approval(task_id, waiting_before=waiting_before, error=error, now=now)


def test_the_reconciler_fails_waits_past_the_timeout_and_one_bad_row_does_not_stop_the_pass(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    with stub_harness(store, tools=TOOLS) as app:
        first, second, young = (refund_task(app, tmp_path / f"{index}.txt") for index in range(3))
        app.queue.add_tasks([first, second, young])
        run(app)
        for old in (first, second):  # they have waited two hours
            store.update_row("ai_agent_tasks", old, approval_requested_at=utcnow() - timedelta(hours=2))
        store.refuse = first
        reconciler = Reconciler(store, approval_timeout_s=1800)

        with caplog.at_level(logging.INFO, logger=LIFECYCLE):
            expired = reconciler.expire_approvals(utcnow())

        assert expired == 1
        states = [store.get_task(task_id).status for task_id in (first, second, young)]  # type: ignore[union-attr]
        assert states == [TaskStatus.AWAITING_APPROVAL, TaskStatus.FAILED, TaskStatus.AWAITING_APPROVAL]
        assert f"Expiring the wait of job {first} failed; the pass goes on" in caplog.text
        error = store.get_task(second).error  # type: ignore[union-attr]
        assert error == "approval timed out: no decision on tool 'refund' within 1800 s"
        assert f"[AgentTaskQueue] ✗ Job {second} failed: {error}" in caplog.text

        # retried with resume, the timed-out call asks again (it never ran) and runs once approved
        app.queue.retry_job(second, resume=True)
        run(app)
        job = app.queue.get_job(second)
        assert job is not None and job.status == TaskStatus.AWAITING_APPROVAL
        assert job.pending_approval is not None and job.pending_approval.seq == 1
        app.queue.approve(second)
        run(app)
        assert store.get_task(second).status == TaskStatus.COMPLETED  # type: ignore[union-attr]
        assert len(lines(tmp_path / "1.txt")) == 1


def test_the_command_line_takes_approvals_decisions_and_requires_a_reason_to_reject(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()

    approve = parser.parse_args(["approve", "0000", "--note", "fine", "--by", "ana"])
    assert (approve.id, approve.note, approve.by) == ("0000", "fine", "ana")
    reject = parser.parse_args(["reject", "0000", "--reason", "no"])
    assert (reject.reason, reject.by) == ("no", None)
    listing = parser.parse_args(["approvals", "--limit", "5"])
    assert (listing.limit, listing.offset) == (5, 0)
    with pytest.raises(SystemExit):
        parser.parse_args(["reject", "0000"])
    assert "--reason" in capsys.readouterr().err


def test_the_cancel_watch_asks_redis_only_while_its_process_runs_attempts(app: Harness) -> None:
    from dramatiq.brokers.redis import RedisBroker
    from redis import RedisError

    from middleware.attempts import AttemptRegistry
    from middleware.cancel_watch import CancelWatch, signal_cancel
    from taskstore import Claim

    nowhere = RedisBroker(url="redis://127.0.0.1:1/0", socket_connect_timeout=0.5)  # type: ignore[no-untyped-call]
    registry = AttemptRegistry()
    watch = CancelWatch(registry)
    assert watch.check(nowhere) == []  # idle: no Redis call at all (this one would fail)
    assert (
        signal_cancel(app.broker, "any", "run") is False
    )  # no Redis behind a StubBroker: the database flag only

    task_id = app.task()
    app.queue.add_task(task_id)
    claim = app.store.claim(
        task_id,
        run_id="00000000-0000-4000-8000-000000000001",
        worker_id="w",
        lease_until=utcnow() + timedelta(minutes=1),
        now=utcnow(),
    )
    assert isinstance(claim, Claim)
    registry.add("message-1", claim)
    with pytest.raises(RedisError):
        watch.check(nowhere)
    nowhere.close()
