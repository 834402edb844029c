"""Texts every store writes the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: Error recorded on a run whose worker stopped renewing its lease.
STALLED_ERROR = "job stalled - worker may have crashed (lease expired)"
#: Error that fails a task once it stalled more often than allowed.
STALLED_LIMIT_ERROR = "job stalled more than allowable limit"

#: Usage columns a finished run records and its task accumulates.
USAGE_COLUMNS = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")


def task_usage_sql(param: str) -> str:
    """``SET`` clause adding a run's usage (parameters named like the columns) to its task.

    Args:
        param: The driver's placeholder for a name, e.g. ``":{}"`` (SQLite) or ``"%({})s"`` (psycopg).
    """
    tokens = ", ".join(f"{column} = {column} + {param.format(column)}" for column in USAGE_COLUMNS)
    return f"{tokens}, cost_usd = cost_usd + COALESCE({param.format('cost_usd')}, 0)"


def run_usage_sql(param: str) -> str:
    """``SET`` clause storing a run's usage; see :func:`task_usage_sql`."""
    return ", ".join(f"{column} = {param.format(column)}" for column in (*USAGE_COLUMNS, "cost_usd"))


#: Columns a schedule's firing resets, so each firing starts with a fresh set of attempts (and steps).
FIRING_RESETS = (
    "status = 'queued', last_run_at = {now}, queued_at = {now}, run_at = {now}, attempts = 0,"
    " stalled_count = 0, postponed_count = 0, error = NULL, cancel_requested_at = NULL, archived_at = NULL,"
    " firing = firing + 1"
)


def unrunnable_statuses(idle_too: bool) -> tuple[str, ...]:
    """Statuses ``fail_unrunnable`` moves to ``failed``: waiting ones, plus finished ones if ``idle_too``."""
    return ("pending", "queued", "completed", "failed") if idle_too else ("pending", "queued")


#: Statuses in which a schedule's firing only advances ``next_run_at`` (the previous firing still runs).
FIRING_BUSY_STATUSES = ("queued", "running", "awaiting_approval")

#: The statuses each compare-and-set transition accepts (the task's status before it).
#: ``finish`` is every transition of a running attempt: complete, fail_attempt, postpone,
#: finish_cancelled and renew_leases (which also require the attempt's run id).
TRANSITION_SOURCES: dict[str, tuple[str, ...]] = {
    "mark_queued": ("pending",),
    "revert_queued": ("queued",),
    "claim": ("queued",),
    "finish": ("running",),
    "request_cancel": ("running",),
    "cancel": ("pending", "queued", "awaiting_approval"),
    "requeue_failed": ("failed",),
    "decide_approval": ("awaiting_approval",),
}


def accepts_sql(transition: str, column: str = "status") -> str:
    """``column IN (…)``: the condition that ``transition`` accepts the task's status."""
    statuses = ", ".join(f"'{status}'" for status in TRANSITION_SOURCES[transition])
    return f"{column} IN ({statuses})"


#: The error of a task whose wait for an approval outlived ``AGENTQ_APPROVAL_TIMEOUT_S``.
APPROVAL_TIMED_OUT = "approval timed out"
#: How times are written inside approval records (ISO-8601, UTC, microseconds), the same on every store.
APPROVAL_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


def approval_time(when: datetime) -> str:
    """``when`` as an approval record writes it (:data:`APPROVAL_TIME_FORMAT`)."""
    return when.astimezone(UTC).strftime(APPROVAL_TIME_FORMAT)


#: The statuses a step may end with (``finish_step``).
STEP_ENDS = ("completed", "failed")


def step_end(status: str) -> str:
    """``status`` as ``finish_step`` writes it: ``completed`` or ``failed``, else :class:`ValueError`."""
    value = str(getattr(status, "value", status))
    if value not in STEP_ENDS:
        raise ValueError(f"a step ends completed or failed, not {value!r}")
    return value


def overview_windows(now: datetime) -> tuple[datetime, datetime, datetime]:
    """The windows of :meth:`~taskstore.base.TaskStore.overview`: an hour ago, midnight and the first of the
    month (UTC; the spending caps' month)."""
    utc = now.astimezone(UTC)
    day_start = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    return utc - timedelta(hours=1), day_start, day_start.replace(day=1)


def title_pattern(text: str | None) -> str | None:
    """A ``LIKE`` pattern (escape character ``\\``) matching titles that contain ``text``."""
    if text is None:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
