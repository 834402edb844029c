"""What happens to an attempt that raised: retry with backoff, postpone, or fail for good.

The decision reads typed errors only (see docs/architecture.md, *Failure paths*):

* An :class:`~orchestrator.errors.AgentRunError` with ``postpone_ms`` set (a provider's 429 and
  its Retry-After: ``ProviderRateLimited``), or Dramatiq's ``RateLimitExceeded``, postpones the
  task: it runs again after that delay and the attempt does not count — up to ``max_postpones``
  times, after which postponements count as ordinary retryable failures, so a permanently
  throttled key still ends. The delay is cut to ``max_postpone_ms`` (``AGENTQ_MAX_POSTPONE_MS``,
  default 15 minutes), so no provider header can push a task out for days or overflow a timestamp.
  A postponement whose error says it does not count (``counts_toward_max_postpones`` False: the
  model-call limiter's ``LimitPostponed`` with a slot booked for the task) is not bounded by
  ``max_postpones``: its end is known and held, so it never turns into a failed attempt.
* An :class:`~orchestrator.errors.AgentRunError` with ``cancels_task`` (``RunCancelled``) ends
  the task ``cancelled``.
* An :class:`~orchestrator.errors.AgentRunError` with ``awaits_approval`` (``ApprovalRequired``) is no
  failure: the task waits in ``awaiting_approval`` for a person, the attempt not counted.
* An :class:`~config.errors.AgentQueueError` whose class declares ``retryable = False`` fails
  the task at once.
* Anything else is retried while attempts remain, after ``backoff * 2**(n-1)`` ms.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dramatiq import RateLimitExceeded
from dramatiq.middleware.time_limit import TimeLimitExceeded

from config.errors import AgentQueueError
from orchestrator.errors import AgentRunError
from taskstore import Task

#: How long a task that hit one of Dramatiq's rate limiters waits before it runs again.
RATE_LIMITED_DELAY_MS = 1000
#: Longest postponement when the caller gives no cap (``AGENTQ_MAX_POSTPONE_MS``'s default, 15 minutes).
DEFAULT_MAX_POSTPONE_MS = 900_000


class Outcome(enum.Enum):
    """What to do with a failed attempt."""

    RETRY = "retry"
    POSTPONE = "postpone"
    FAIL = "fail"
    #: The run stopped because it was asked to (``cancels_task``): the task ends ``cancelled``.
    CANCEL = "cancel"
    #: The run stopped at a tool call a person must approve (``awaits_approval``): the task waits.
    AWAIT_APPROVAL = "await_approval"


@dataclass(frozen=True)
class Decision:
    """An :class:`Outcome` and the delay before the task runs again (0 when it fails)."""

    outcome: Outcome
    delay_ms: int = 0


def backoff_ms(attempt: int, base_ms: int) -> int:
    """Delay before the attempt after ``attempt``: ``base * 2**(attempt-1)`` (2 s, 4 s, 8 s … for 2 s)."""
    return int(base_ms * 2 ** max(attempt - 1, 0))


def is_retryable(exception: BaseException) -> bool:
    """Our errors declare ``retryable``; any other error (a timeout, a crashing tool) is worth a retry."""
    return exception.retryable if isinstance(exception, AgentQueueError) else True


def postpone_ms(exception: BaseException) -> int | None:
    """The delay an exception asks the task to wait without using an attempt, if any.

    Dramatiq's own ``RateLimitExceeded`` (from its rate limiters, used inside an agent kind) postpones
    by :data:`RATE_LIMITED_DELAY_MS`: waiting for a limiter is not a failure.
    """
    if isinstance(exception, RateLimitExceeded):
        return RATE_LIMITED_DELAY_MS
    if isinstance(exception, AgentRunError) and exception.postpone_ms is not None:
        return exception.postpone_ms if exception.postpone_ms >= 0 else None
    return None


def postpone_cause(exception: BaseException | None) -> str:
    """Why ``exception`` postponed a task, for metrics: the error's own ``postpone_cause`` (``provider_429``,
    ``rpm``, ``org_tpm``, …), ``rate_limit`` for Dramatiq's limiters, else ``other``."""
    if isinstance(exception, RateLimitExceeded):
        return "rate_limit"
    if isinstance(exception, AgentRunError) and exception.postpone_cause:
        return exception.postpone_cause
    return "other"


def _bounded(exception: BaseException) -> bool:
    """Whether a postponement by ``exception`` counts toward ``max_postpones``."""
    return not isinstance(exception, AgentRunError) or exception.counts_toward_max_postpones


def time_limit_message(limit_ms: int | None = None) -> str:
    """What an attempt ended by its time limit failed with: the limit when known (a run on the event
    loop), else where it comes from (Dramatiq's ``TimeLimitExceeded`` in a worker thread carries none)."""
    if limit_ms is not None:
        return f"the attempt ran longer than its time limit of {limit_ms} ms"
    return (
        "the attempt ran longer than its time limit (the kind's time_limit, else AGENTQ_TASK_TIME_LIMIT_MS)"
    )


#: The message of Dramatiq's ``TimeLimitExceeded`` raised in a worker thread.
TIME_LIMIT_MESSAGE = time_limit_message()


def describe(exception: BaseException) -> str:
    """The failure message stored and logged for ``exception`` (its type's name when it has none)."""
    text = str(exception).strip()
    if not text and isinstance(exception, TimeLimitExceeded):
        return TIME_LIMIT_MESSAGE
    return text if text else type(exception).__name__


def decide(
    exception: BaseException,
    task: Task,
    *,
    max_attempts: int,
    backoff_base_ms: int,
    max_postpones: int,
    max_postpone_ms: int = DEFAULT_MAX_POSTPONE_MS,
) -> Decision:
    """The :class:`Decision` for ``task``'s attempt that raised ``exception``.

    A postponement waits ``min(postpone_ms, max_postpone_ms)``.
    """
    if isinstance(exception, AgentRunError) and exception.cancels_task:
        return Decision(Outcome.CANCEL)
    if isinstance(exception, AgentRunError) and exception.awaits_approval:
        return Decision(Outcome.AWAIT_APPROVAL)
    delay = postpone_ms(exception)
    if delay is not None and (task.postponed_count < max_postpones or not _bounded(exception)):
        return Decision(Outcome.POSTPONE, min(delay, max_postpone_ms))
    if is_retryable(exception) and task.attempts < max_attempts:
        return Decision(Outcome.RETRY, backoff_ms(task.attempts, backoff_base_ms))
    return Decision(Outcome.FAIL)
