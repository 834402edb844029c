"""The failure policy: retry with backoff, postpone without using the attempt, or fail."""

from __future__ import annotations

import dataclasses

import pytest
from dramatiq import RateLimitExceeded
from dramatiq.middleware.time_limit import TimeLimitExceeded

from config.errors import AgentQueueError
from middleware.failure_policy import (
    DEFAULT_MAX_POSTPONE_MS,
    TIME_LIMIT_MESSAGE,
    Outcome,
    backoff_ms,
    decide,
    describe,
    postpone_cause,
)
from orchestrator.errors import (
    LimitPostponed,
    MaxTurnsExceeded,
    ProviderRateLimited,
    RunCancelled,
    ToolTimeout,
)
from taskstore import InMemoryTaskStore, NewTask, Task, utcnow
from tests.conftest import make_agent

ORG = "11111111-1111-4111-8111-111111111111"


def task(**fields: object) -> Task:
    store = InMemoryTaskStore()
    created = store.create_task(
        NewTask(agent_id=make_agent(store, utcnow()), organization_id=ORG, title="t"), now=utcnow()
    )
    return dataclasses.replace(created, **fields)  # type: ignore[arg-type]


class Permanent(AgentQueueError):
    retryable = False


class Throttled(ProviderRateLimited):
    def __init__(self) -> None:
        super().__init__("slow down", retry_after_ms=1500)


@pytest.mark.parametrize(("attempt", "delay"), [(1, 2000), (2, 4000), (3, 8000), (4, 16000)])
def test_backoff_doubles_from_the_base(attempt: int, delay: int) -> None:
    assert backoff_ms(attempt, 2000) == delay


def test_a_plain_error_retries_while_attempts_remain_then_fails() -> None:
    first = decide(RuntimeError("x"), task(attempts=1), max_attempts=3, backoff_base_ms=2000, max_postpones=5)
    last = decide(RuntimeError("x"), task(attempts=3), max_attempts=3, backoff_base_ms=2000, max_postpones=5)
    assert (first.outcome, first.delay_ms) == (Outcome.RETRY, 2000)
    assert last.outcome is Outcome.FAIL


def test_a_non_retryable_error_fails_at_once() -> None:
    decision = decide(Permanent(), task(attempts=1), max_attempts=3, backoff_base_ms=2000, max_postpones=5)
    assert decision.outcome is Outcome.FAIL


def test_postponements_keep_the_attempt_until_the_cap() -> None:
    throttled = Throttled()
    kept = decide(throttled, task(attempts=3), max_attempts=3, backoff_base_ms=2000, max_postpones=5)
    capped = decide(
        throttled, task(attempts=1, postponed_count=5), max_attempts=3, backoff_base_ms=2000, max_postpones=5
    )
    assert (kept.outcome, kept.delay_ms) == (Outcome.POSTPONE, 1500)
    assert capped.outcome is Outcome.RETRY


def test_dramatiqs_rate_limit_exceeded_postpones_instead_of_burning_an_attempt() -> None:
    limited = RateLimitExceeded("busy")  # type: ignore[no-untyped-call]
    decision = decide(limited, task(attempts=1), max_attempts=3, backoff_base_ms=2000, max_postpones=5)
    assert decision.outcome is Outcome.POSTPONE


class AbsurdRetryAfter(ProviderRateLimited):
    def __init__(self) -> None:  # a provider's ``Retry-After: 100000000``, in ms
        super().__init__("slow down", retry_after_ms=100_000_000_000)


def test_a_postponement_is_cut_to_max_postpone_ms() -> None:
    decision = decide(
        AbsurdRetryAfter(),
        task(attempts=1),
        max_attempts=3,
        backoff_base_ms=2000,
        max_postpones=5,
        max_postpone_ms=900_000,
    )
    assert (decision.outcome, decision.delay_ms) == (Outcome.POSTPONE, 900_000)


def test_without_a_cap_the_default_of_fifteen_minutes_applies() -> None:
    decision = decide(
        AbsurdRetryAfter(), task(attempts=1), max_attempts=3, backoff_base_ms=2000, max_postpones=5
    )
    assert decision.delay_ms == DEFAULT_MAX_POSTPONE_MS == 15 * 60 * 1000


class LooksThrottled(Exception):
    """Not one of our errors: attributes that merely look like ours are not read."""

    retryable = False
    postpone_ms = 1500
    cancels_task = True


def test_only_typed_errors_steer_the_decision() -> None:
    decision = decide(
        LooksThrottled(), task(attempts=1), max_attempts=3, backoff_base_ms=2000, max_postpones=5
    )
    assert (decision.outcome, decision.delay_ms) == (Outcome.RETRY, 2000)


def test_a_cancelled_run_cancels_the_task() -> None:
    decision = decide(
        RunCancelled("before model call 2"),
        task(attempts=1),
        max_attempts=3,
        backoff_base_ms=2000,
        max_postpones=5,
    )
    assert decision.outcome is Outcome.CANCEL


def test_a_retryable_run_error_retries_and_a_permanent_one_fails() -> None:
    timeout = decide(
        ToolTimeout("lookup", 5), task(attempts=1), max_attempts=3, backoff_base_ms=2000, max_postpones=5
    )
    turns = decide(
        MaxTurnsExceeded(3), task(attempts=1), max_attempts=3, backoff_base_ms=2000, max_postpones=5
    )
    assert (timeout.outcome, turns.outcome) == (Outcome.RETRY, Outcome.FAIL)


def _limit_postponed(*, booked: bool) -> LimitPostponed:
    return LimitPostponed("full", bucket="openai:m", postpone_ms=30_000, cause="rpm", booked=booked)


def test_a_booked_limit_postponement_is_not_bounded_by_max_postpones() -> None:
    # Given a task already postponed as often as allowed
    spent = task(attempts=1, postponed_count=5)

    # When the limiter postpones it to a slot it booked, or without one (Redis down, provider pause)
    booked = decide(_limit_postponed(booked=True), spent, max_attempts=3, backoff_base_ms=10, max_postpones=5)
    unbooked = decide(
        _limit_postponed(booked=False), spent, max_attempts=3, backoff_base_ms=10, max_postpones=5
    )

    # Then the booked wait is still a postponement (its end is known and held); the other counts
    assert (booked.outcome, booked.delay_ms) == (Outcome.POSTPONE, 30_000)
    assert unbooked.outcome is Outcome.RETRY


def test_postponements_name_their_cause() -> None:
    assert postpone_cause(Throttled()) == "provider_429"
    assert postpone_cause(_limit_postponed(booked=True)) == "rpm"
    limited = RateLimitExceeded("busy")  # type: ignore[no-untyped-call]
    assert postpone_cause(limited) == "rate_limit"
    assert postpone_cause(RuntimeError("x")) == "other"
    assert postpone_cause(None) == "other"


def test_a_failure_is_described_by_its_message_else_by_its_type() -> None:
    assert describe(ValueError("  bad value 'x'  ")) == "bad value 'x'"
    assert describe(KeyError()) == "KeyError"
    # Dramatiq's time limit in a worker thread carries no message: the stored error says what happened
    assert describe(TimeLimitExceeded()) == TIME_LIMIT_MESSAGE
    assert "time limit" in TIME_LIMIT_MESSAGE and "AGENTQ_TASK_TIME_LIMIT_MS" in TIME_LIMIT_MESSAGE
    assert describe(TimeLimitExceeded("the attempt ran longer than its time limit of 50 ms")).endswith(
        "50 ms"
    )
