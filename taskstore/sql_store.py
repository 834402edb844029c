"""The TaskStore of the Postgres family, written once over the ``agentq_*`` SQL functions.

Every transition and read is one call of a SQL function of ``taskstore/sql/functions.sql`` (installed by
migration ``0005_one_statement``). :class:`SqlFunctionStore` builds the arguments, decodes the rows and
reads each compare-and-set's answer; a subclass supplies the transport, :meth:`SqlFunctionStore._call`:
psycopg for :class:`~taskstore.postgres.PostgresTaskStore`, PostgREST's ``rpc`` for
:class:`~taskstore.supabase.SupabaseTaskStore`. See docs/architecture.md, *Task store*.

A write may be given ``applied``: asked by a transport that re-sent the write after a lost response and
was told "lost the race" (or "id taken"), whether the first send took effect. It answers in the shape of
the call's result, or ``None`` (it did not). Transports that never re-send ignore it.
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from taskstore.base import new_id
from taskstore.models import (
    Agent,
    ApprovalRequest,
    Claim,
    CleanupResult,
    DueSchedule,
    FiredSchedule,
    Firing,
    MinuteCount,
    NewAgent,
    NewTask,
    OrganizationSpend,
    Overview,
    QueueCounts,
    QueuedTask,
    RetentionPolicy,
    Run,
    RunStatus,
    StalledTask,
    Step,
    StepKind,
    StepRecord,
    StepStatus,
    Task,
    TaskFilter,
    TaskKey,
    TaskStatus,
    TaskSummary,
    Usage,
    WaitingTask,
)
from taskstore.rows import (
    AGENT_COLUMNS,
    TASK_COLUMNS,
    agent_from_row,
    in_order,
    run_from_row,
    step_from_row,
    task_from_row,
)
from taskstore.rules import (
    STALLED_ERROR,
    STALLED_LIMIT_ERROR,
    USAGE_COLUMNS,
    overview_windows,
    step_end,
    title_pattern,
    unrunnable_statuses,
)
from taskstore.schema import AGENTS, RUNS, STEPS, TASKS, CreateTable, all_columns
from taskstore.storable import storable_json, storable_text

Row = dict[str, Any]
Applied = Callable[[], Any] | None

#: The current source of every ``agentq_*`` function.
FUNCTIONS_SQL = Path(__file__).parent / "sql" / "functions.sql"

_DEFINITION = re.compile(
    r"CREATE OR REPLACE FUNCTION (agentq_\w+)\s*\((.*?)\)\s*RETURNS\s+(SETOF\s+|TABLE\s*\((.*?)\))?",
    re.DOTALL | re.IGNORECASE,
)


@dataclass(frozen=True)
class Signature:
    """An ``agentq_*`` function as a caller needs it: parameter types by name, and whether it returns rows."""

    name: str
    params: Mapping[str, str]
    returns_rows: bool
    #: Not declared ``STABLE``: a write (which a transport may re-send after a lost response).
    writes: bool
    #: The columns of a ``RETURNS TABLE (…)`` result, types by name (empty for any other result).
    columns: Mapping[str, str] = field(default_factory=dict)


def _name_types(text: str) -> dict[str, str]:
    """``{"p_a": "uuid", …}`` from ``"p_a uuid, p_b text DEFAULT NULL"`` (no commas inside types)."""
    found = {}
    for part in filter(None, (item.strip() for item in text.split(","))):
        name, kind = part.split()[:2]
        found[name] = kind
    return found


@functools.cache
def signatures() -> dict[str, Signature]:
    """The functions of :data:`FUNCTIONS_SQL` by name (parsed once)."""
    found: dict[str, Signature] = {}
    text = FUNCTIONS_SQL.read_text(encoding="utf-8")
    for match in _DEFINITION.finditer(text):
        header = text[match.end() : text.index("$$", match.end())]
        found[match[1]] = Signature(
            match[1],
            _name_types(match[2]),
            bool(match[3]),
            " STABLE " not in f" {header} ",
            _name_types(match[4] or ""),
        )
    return found


def _decoder(table: CreateTable) -> Callable[[Mapping[str, Any]], Row]:
    """Turn a row's values into the stores' Python values: JSON gives timestamps as ISO text and money
    as numbers, psycopg gives them decoded; both come out as aware datetimes and Decimals."""
    kinds = [
        (column.name, column.type) for column in all_columns(table) if column.type in ("timestamp", "money")
    ]

    def decode(row: Mapping[str, Any]) -> Row:
        decoded = dict(row)
        for name, kind in kinds:
            value = decoded.get(name)
            if value is None or isinstance(value, datetime | Decimal):
                continue
            decoded[name] = datetime.fromisoformat(value) if kind == "timestamp" else Decimal(str(value))
        return decoded

    return decode


_task_row = _decoder(TASKS)
_agent_row = _decoder(AGENTS)
_run_row = _decoder(RUNS)
_step_row = _decoder(STEPS)
#: The function of each step write (``agentq_record_steps`` writes a batch of them).
_STEP_FUNCTIONS = {
    "start": "agentq_start_step",
    "finish": "agentq_finish_step",
    "record": "agentq_record_step",
}


def decode_task(row: Mapping[str, Any]) -> Task:
    """A :class:`Task` from an ``ai_agent_tasks`` row as either transport returns it."""
    return task_from_row(_task_row(row))


def decode_claim(data: Mapping[str, Any]) -> Claim:
    """A :class:`Claim` from ``{"task", "agent", "steps"}`` (``agentq_claim``; a row of ``_claim_many``)."""
    task = decode_task(data["task"])
    agent = agent_from_row(_agent_row(data["agent"])) if data["agent"] is not None else None
    steps = tuple(decode_step(row) for row in data.get("steps") or ())
    assert task.current_run_id is not None
    return Claim(task=task, agent=agent, run_id=task.current_run_id, steps=steps)


def decode_step(row: Mapping[str, Any]) -> Step:
    """A :class:`Step` from an ``ai_agent_task_steps`` row as either transport returns it."""
    return step_from_row(_step_row(row))


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def json_value(value: Any) -> Any:
    """``value`` as it travels as (or inside) a JSON argument: timestamps as ISO text, decimals as exact
    text (a JSON number would round-trip through a float), tuples and lists as lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple | list):
        return [json_value(item) for item in value]
    return value


def new_row(record: NewAgent | NewTask, columns: Sequence[str], now: datetime, **values: Any) -> Row:
    """The JSON of a new row: every column of ``columns`` that ``record`` has, plus ``values``."""
    row = {name: json_value(getattr(record, name)) for name in columns if hasattr(record, name)}
    row.update(id=record.id or new_id(), created_at=now.isoformat(), updated_at=now.isoformat(), **values)
    return row


def _queued_at(task: Task, now: datetime) -> bool:
    """Whether ``task`` was queued by the write made at ``now``."""
    return task.status == TaskStatus.QUEUED and task.queued_at == now


def usage_params(usage: Usage, transcript: list[dict[str, Any]] | None) -> Row:
    """A finished run's usage as ``p_<column>`` arguments."""
    params = {f"p_{column}": getattr(usage, column) for column in USAGE_COLUMNS}
    params["p_cost_usd"] = usage.cost_usd
    params["p_transcript"] = storable_json(transcript)
    return params


class SqlFunctionStore(ABC):
    """Every ``TaskStore`` method as a call of its ``agentq_*`` function; subclasses add the transport."""

    @abstractmethod
    def _call(self, function: str, params: dict[str, Any], applied: Applied = None) -> Any:
        """Call ``function`` with named ``params``: a list of row mappings for a ``SETOF`` function, else
        its value (JSON decoded)."""

    def _tasks(self, function: str, params: dict[str, Any], applied: Applied = None) -> list[Task]:
        return [decode_task(row) for row in self._call(function, params, applied) or []]

    def _task(self, function: str, params: dict[str, Any], check: Callable[[Task], bool]) -> Task | None:
        """A single-task compare-and-set; ``check`` tells from the row whether a lost response's write
        was applied (the re-send then changes nothing)."""
        task_id = params["p_task_id"]

        def applied() -> list[Row] | None:
            rows = self._call("agentq_get_tasks", {"p_task_ids": [task_id]}) or []
            return rows if rows and check(decode_task(rows[0])) else None

        tasks = self._tasks(function, params, applied)
        return tasks[0] if tasks else None

    # --- agents and tasks -------------------------------------------------

    def create_agent(self, agent: NewAgent, *, now: datetime) -> Agent:
        row = new_row(agent, AGENT_COLUMNS, now)
        rows = self._call(
            "agentq_create_agent",
            {"p_agent": row},
            lambda: self._call("agentq_get_agent", {"p_agent_id": row["id"]}) or None,
        )
        return agent_from_row(_agent_row(rows[0]))

    def get_agent(self, agent_id: str) -> Agent | None:
        rows = self._call("agentq_get_agent", {"p_agent_id": agent_id})
        return agent_from_row(_agent_row(rows[0])) if rows else None

    def create_task(self, task: NewTask, *, now: datetime) -> Task:
        return self.create_tasks([task], now=now)[0]

    def create_runnable_task(self, task: NewTask, *, kinds: Collection[str], now: datetime) -> Task | None:
        """``agentq_create_runnable_task``: the agent check and the insert in one statement."""
        row = new_row(task, TASK_COLUMNS, now, status="pending")

        def applied() -> list[Row] | None:
            existing = self._call("agentq_get_tasks", {"p_task_ids": [row["id"]]}) or []
            return existing if existing and decode_task(existing[0]).created_at == now else None

        params = {"p_task": row, "p_kinds": sorted(kinds)}
        tasks = self._tasks("agentq_create_runnable_task", params, applied)
        return tasks[0] if tasks else None

    def get_task(self, task_id: str) -> Task | None:
        tasks = self._tasks("agentq_get_tasks", {"p_task_ids": [task_id]})
        return tasks[0] if tasks else None

    def create_tasks(self, tasks: Sequence[NewTask], *, now: datetime) -> list[Task]:
        """One statement: all rows or none (:class:`~taskstore.errors.DuplicateTask` if an id is taken)."""
        if not tasks:
            return []
        rows = [new_row(task, TASK_COLUMNS, now, status="pending") for task in tasks]
        ids = [row["id"] for row in rows]

        def applied() -> list[Row] | None:
            existing = self._call("agentq_get_tasks", {"p_task_ids": ids}) or []
            mine = len(existing) == len(ids) and all(decode_task(row).created_at == now for row in existing)
            return existing if mine else None

        return in_order(self._tasks("agentq_create_tasks", {"p_tasks": rows}, applied), ids)

    def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        return in_order(
            self._tasks("agentq_get_tasks", {"p_task_ids": list(task_ids)}), task_ids, missing_ok=True
        )

    def get_runs(self, task_id: str) -> list[Run]:
        return [run_from_row(_run_row(row)) for row in self._call("agentq_get_runs", {"p_task_id": task_id})]

    # --- enqueueing -------------------------------------------------------

    def mark_queued_many(
        self, task_ids: Sequence[str], *, priority: int | None, run_at: datetime, now: datetime
    ) -> list[Task] | None:
        """``agentq_mark_queued_many``: all of them or none, in one round trip."""
        ids = list(task_ids)

        def applied() -> list[Row] | None:
            rows = self._call("agentq_get_tasks", {"p_task_ids": ids}) or []
            tasks = [decode_task(row) for row in rows]
            mine = len(tasks) == len(ids) and all(_queued_at(task, now) for task in tasks)
            return rows if mine else None

        params = {"p_task_ids": ids, "p_priority": priority, "p_run_at": run_at, "p_now": now}
        tasks = self._tasks("agentq_mark_queued_many", params, applied)
        return in_order(tasks, ids) if len(tasks) == len(ids) else None

    def mark_queued(
        self, task_id: str, *, priority: int | None, run_at: datetime, now: datetime
    ) -> Task | None:
        params = {"p_task_id": task_id, "p_priority": priority, "p_run_at": run_at, "p_now": now}
        return self._task("agentq_mark_queued", params, lambda task: _queued_at(task, now))

    def queue_runnable_task(
        self,
        task_id: str,
        *,
        kinds: Collection[str],
        priority: int | None,
        run_at: datetime,
        now: datetime,
    ) -> QueuedTask | None:
        """``agentq_queue_runnable_task``: the agent check, the compare-and-set and the agent's kind in one
        round trip."""

        def applied() -> Row | None:
            task = self.get_task(task_id)
            agent = self.get_agent(task.agent_id) if task is not None and _queued_at(task, now) else None
            if task is None or agent is None:
                return None
            return {"task": self._call("agentq_get_tasks", {"p_task_ids": [task_id]})[0], "kind": agent.kind}

        params = {
            "p_task_id": task_id,
            "p_kinds": sorted(kinds),
            "p_priority": priority,
            "p_run_at": run_at,
            "p_now": now,
        }
        queued = self._call("agentq_queue_runnable_task", params, applied)
        return None if queued is None else QueuedTask(decode_task(queued["task"]), queued["kind"])

    def queue_runnable_tasks(
        self,
        task_ids: Sequence[str],
        *,
        kinds: Collection[str],
        priority: int | None,
        run_at: datetime,
        now: datetime,
    ) -> list[QueuedTask] | None:
        """``agentq_queue_runnable_tasks``: all or none, with each agent's kind, in one round trip."""
        ids = list(task_ids)

        def applied() -> list[Row] | None:
            tasks = self.get_tasks(ids)
            if len(tasks) != len(ids) or not all(_queued_at(task, now) for task in tasks):
                return None
            agents = {agent_id: self.get_agent(agent_id) for agent_id in {task.agent_id for task in tasks}}
            rows = self._call("agentq_get_tasks", {"p_task_ids": ids}) or []
            kind = {task.id: agents[task.agent_id] for task in tasks}
            return [{"task": row, "kind": getattr(kind[str(row["id"])], "kind", "")} for row in rows]

        params = {
            "p_task_ids": ids,
            "p_kinds": sorted(kinds),
            "p_priority": priority,
            "p_run_at": run_at,
            "p_now": now,
        }
        items = self._call("agentq_queue_runnable_tasks", params, applied) or []
        if len(items) != len(ids):
            return None
        queued = {str(item["task"]["id"]): item for item in items}
        return [QueuedTask(decode_task(queued[task_id]["task"]), queued[task_id]["kind"]) for task_id in ids]

    def revert_queued_many(self, task_ids: Sequence[str], *, queued_at: datetime, now: datetime) -> int:
        params = {"p_task_ids": list(task_ids), "p_queued_at": queued_at, "p_now": now}
        return int(self._call("agentq_revert_queued_many", params) or 0)

    def revert_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        def applied() -> int | None:
            task = self.get_task(task_id)
            mine = task is not None and task.status == TaskStatus.PENDING and task.updated_at == now
            return 1 if mine else None

        params = {"p_task_ids": [task_id], "p_queued_at": queued_at, "p_now": now}
        return bool(self._call("agentq_revert_queued_many", params, applied))

    def touch_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        def applied() -> bool | None:
            task = self.get_task(task_id)
            mine = task is not None and task.status == TaskStatus.QUEUED and task.queued_at == now
            return True if mine and queued_at != now else None

        params = {"p_task_id": task_id, "p_queued_at": queued_at, "p_now": now}
        return bool(self._call("agentq_touch_queued", params, applied))

    def find_pending(self, *, created_before: datetime, limit: int = 500) -> list[WaitingTask]:
        return self._waiting("agentq_find_pending", created_before, limit)

    def find_queued(self, *, queued_before: datetime, limit: int = 1000) -> list[WaitingTask]:
        return self._waiting("agentq_find_queued", queued_before, limit)

    def _waiting(self, function: str, before: datetime, limit: int) -> list[WaitingTask]:
        rows = self._call(function, {"p_before": before, "p_limit": limit}) or []
        return [WaitingTask(row["id"], row["kind"], datetime.fromisoformat(row["since"])) for row in rows]

    # --- running ----------------------------------------------------------

    def claim(
        self,
        task_id: str,
        *,
        run_id: str,
        worker_id: str,
        lease_until: datetime,
        now: datetime,
        max_running_in_org: int | None = None,
    ) -> Claim | None:
        item = {
            "task_id": task_id,
            "run_id": run_id,
            "worker_id": worker_id,
            "lease_until": lease_until,
            "now": now,
        }
        if max_running_in_org is None:
            return self._submit_claim(item)
        return self._claim_one(item, max_running_in_org)

    def _submit_claim(self, item: Row) -> Claim | None:
        """Where :meth:`claim` sends an uncapped claim (the Postgres store may batch it)."""
        return self._claim_one(item)

    def _claim_one(self, item: Row, max_running_in_org: int | None = None) -> Claim | None:
        def applied() -> Row | None:
            rows = self._call("agentq_get_tasks", {"p_task_ids": [item["task_id"]]}) or []
            if not rows or decode_task(rows[0]).current_run_id != item["run_id"]:
                return None
            agent = self._call("agentq_get_agent", {"p_agent_id": rows[0]["agent_id"]})
            steps = self._call("agentq_get_steps", {"p_task_id": item["task_id"]}) or []
            return {"task": rows[0], "agent": agent[0] if agent else None, "steps": steps}

        params = {f"p_{name}": value for name, value in item.items()}
        data = self._call("agentq_claim", {**params, "p_max_running_in_org": max_running_in_org}, applied)
        return decode_claim(data) if data else None

    def renew_leases(
        self, held: Sequence[tuple[str, str]], *, lease_until: datetime, now: datetime
    ) -> list[str]:
        if not held:
            return []
        params = {
            "p_task_ids": [task_id for task_id, _ in held],
            "p_run_ids": [run_id for _, run_id in held],
            "p_lease_until": lease_until,
        }
        return [str(task_id) for task_id in self._call("agentq_renew_leases", params) or []]

    def recover_stalled(
        self, *, max_stalled_count: int, now: datetime, limit: int = 100
    ) -> list[StalledTask]:
        params = {
            "p_now": now,
            "p_max_stalled_count": max_stalled_count,
            "p_error": STALLED_ERROR,
            "p_limit_error": STALLED_LIMIT_ERROR,
            "p_limit": limit,
        }
        return [
            StalledTask(
                row["id"], row["kind"], row["status"] == "queued", row["stalled_count"], row["attempts"]
            )
            for row in self._call("agentq_recover_stalled", params) or []
        ]

    # --- finishing a run --------------------------------------------------

    def _finish(self, task_id: str, run_id: str, run_status: RunStatus, now: datetime, **params: Any) -> bool:
        def applied() -> bool | None:
            runs = self.get_runs(task_id)
            ended = any(
                run.id == run_id and run.status == run_status and run.finished_at == now for run in runs
            )
            return True if ended else None

        function = "agentq_postpone" if run_status == RunStatus.POSTPONED else "agentq_finish"
        if function == "agentq_finish":
            params["p_run_status"] = run_status.value
        params.update(p_task_id=task_id, p_run_id=run_id, p_now=now)
        return bool(self._call(function, params, applied))

    def complete(
        self,
        task_id: str,
        run_id: str,
        *,
        result: dict[str, Any],
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
        step: StepRecord | None = None,
    ) -> bool:
        return self._submit_completion(complete_item(task_id, run_id, result, usage, transcript, now, step))

    def _submit_completion(self, item: Row) -> bool:
        """Where :meth:`complete` sends a completion (the Postgres store may batch it)."""
        return self._complete_one(item)

    def _complete_one(self, item: Row) -> bool:
        usage = {f"p_{column}": item[column] for column in (*USAGE_COLUMNS, "cost_usd", "transcript")}
        return self._finish(
            item["task_id"], item["run_id"], RunStatus.COMPLETED, item["now"],
            p_status="completed", p_result=item["result"], p_step=item["step"], **usage,
        )  # fmt: skip

    def fail_attempt(
        self,
        task_id: str,
        run_id: str,
        *,
        error: str,
        stacktrace: str | None,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        retry_at: datetime | None,
        now: datetime,
    ) -> bool:
        return self._finish(
            task_id, run_id, RunStatus.FAILED, now,
            p_status="failed" if retry_at is None else "queued",
            p_error=storable_text(error), p_stacktrace=storable_text(stacktrace), p_retry_at=retry_at,
            **usage_params(usage, transcript),
        )  # fmt: skip

    def finish_cancelled(
        self,
        task_id: str,
        run_id: str,
        *,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        return self._finish(
            task_id, run_id, RunStatus.CANCELLED, now,
            p_status="cancelled", p_error="cancelled on request", **usage_params(usage, transcript),
        )  # fmt: skip

    def postpone(
        self,
        task_id: str,
        run_id: str,
        *,
        reason: str,
        run_at: datetime,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        return self._finish(
            task_id, run_id, RunStatus.POSTPONED, now,
            p_reason=storable_text(reason), p_run_at=run_at, **usage_params(usage, transcript),
        )  # fmt: skip

    # --- single-task transitions -------------------------------------------

    def fail_unrunnable(
        self, task_id: str, *, error: str, now: datetime, idle_too: bool = False
    ) -> Task | None:
        params = {
            "p_task_id": task_id,
            "p_error": storable_text(error),
            "p_now": now,
            "p_statuses": list(unrunnable_statuses(idle_too)),
        }
        return self._task(
            "agentq_fail_unrunnable", params, lambda t: t.status == TaskStatus.FAILED and t.failed_at == now
        )

    def request_cancel(self, task_id: str, *, now: datetime) -> Task | None:
        return self._task(
            "agentq_request_cancel",
            {"p_task_id": task_id, "p_now": now},
            lambda t: t.status == TaskStatus.RUNNING and t.cancel_requested_at == now,
        )

    def cancel_requested(self, task_id: str) -> bool:
        return bool(self._call("agentq_cancel_requested", {"p_task_id": task_id}))

    def cancel(self, task_id: str, *, now: datetime) -> Task | None:
        return self._task(
            "agentq_cancel",
            {"p_task_id": task_id, "p_now": now},
            lambda t: t.status == TaskStatus.CANCELLED and t.updated_at == now,
        )

    def requeue_failed(
        self, task_id: str, *, run_at: datetime, now: datetime, resume: bool = False
    ) -> Task | None:
        return self._task(
            "agentq_requeue_failed",
            {"p_task_id": task_id, "p_run_at": run_at, "p_now": now, "p_resume": resume},
            lambda t: t.status == TaskStatus.QUEUED and t.queued_at == now and t.attempts == 0,
        )

    # --- the step ledger ----------------------------------------------------
    # Both writes are idempotent for their own run (a re-sent one is applied again, or accepted as is),
    # so a transport's re-send needs no ``applied``.

    def start_step(
        self,
        task_id: str,
        run_id: str,
        *,
        firing: int,
        seq: int,
        kind: StepKind,
        name: str,
        input: dict[str, Any],
        replaces: str | None,
        now: datetime,
    ) -> bool:
        params = {
            "p_task_id": task_id,
            "p_run_id": run_id,
            "p_firing": firing,
            "p_seq": seq,
            "p_kind": StepKind(kind).value,
            "p_name": storable_text(name),
            "p_input": storable_json(input),
            "p_replaces": replaces,
            "p_now": now,
        }
        return self._submit_step({"op": "start", **params})

    def finish_step(
        self,
        task_id: str,
        run_id: str,
        *,
        firing: int,
        seq: int,
        status: StepStatus,
        output: dict[str, Any] | None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | None = None,
        error: str | None = None,
        now: datetime,
    ) -> bool:
        params = {
            "p_task_id": task_id,
            "p_run_id": run_id,
            "p_firing": firing,
            "p_seq": seq,
            "p_status": step_end(status),
            "p_now": now,
            "p_output": storable_json(output),
            "p_input_tokens": input_tokens,
            "p_output_tokens": output_tokens,
            "p_cost_usd": cost_usd,
            "p_error": storable_text(error),
        }
        return self._submit_step({"op": "finish", **params})

    def record_step(self, task_id: str, run_id: str, step: StepRecord) -> bool:
        return self._submit_step(
            {"op": "record", "p_task_id": task_id, "p_run_id": run_id, "p_step": step_json(step)}
        )

    def _submit_step(self, item: Row) -> bool:
        """Where a step write goes (the Postgres store may batch it): ``{"op": "start"|"finish", p_…}``."""
        return self._step_one(item)

    def _step_one(self, item: Row) -> bool:
        function = _STEP_FUNCTIONS[item["op"]]
        return bool(self._call(function, {name: value for name, value in item.items() if name != "op"}))

    def get_steps(self, task_id: str) -> list[Step]:
        return [decode_step(row) for row in self._call("agentq_get_steps", {"p_task_id": task_id}) or []]

    # --- approvals ----------------------------------------------------------

    def await_step(
        self,
        task_id: str,
        run_id: str,
        *,
        firing: int,
        seq: int,
        name: str,
        input: dict[str, Any],
        approval: dict[str, Any],
        replaces: str | None,
        now: datetime,
    ) -> bool:
        """``agentq_await_step``; idempotent for its own run, as the other step writes (no ``applied``)."""
        params = {
            "p_task_id": task_id,
            "p_run_id": run_id,
            "p_firing": firing,
            "p_seq": seq,
            "p_name": storable_text(name),
            "p_input": storable_json(input),
            "p_approval": storable_json(approval),
            "p_replaces": replaces,
            "p_now": now,
        }
        return bool(self._call("agentq_await_step", params))

    def await_approval(
        self,
        task_id: str,
        run_id: str,
        *,
        reason: str,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        def applied() -> bool | None:
            runs = self.get_runs(task_id)
            waiting = RunStatus.AWAITING_APPROVAL
            return (
                True
                if any(r.id == run_id and r.status == waiting and r.finished_at == now for r in runs)
                else None
            )

        params = {"p_task_id": task_id, "p_run_id": run_id, "p_reason": storable_text(reason), "p_now": now}
        return bool(
            self._call("agentq_await_approval", {**params, **usage_params(usage, transcript)}, applied)
        )

    def decide_approval(
        self, task_id: str, *, decision: dict[str, Any], output: dict[str, Any] | None, now: datetime
    ) -> Task | None:
        params = {
            "p_task_id": task_id,
            "p_decision": storable_json(decision),
            "p_output": storable_json(output),
            "p_now": now,
        }
        return self._task(
            "agentq_decide_approval", params, lambda t: t.status == TaskStatus.QUEUED and t.queued_at == now
        )

    def expire_approval(
        self, task_id: str, *, waiting_before: datetime, error: str, now: datetime
    ) -> Task | None:
        params = {
            "p_task_id": task_id,
            "p_before": waiting_before,
            "p_error": storable_text(error),
            "p_now": now,
        }
        return self._task(
            "agentq_expire_approval", params, lambda t: t.status == TaskStatus.FAILED and t.failed_at == now
        )

    def list_approvals(
        self, *, limit: int = 100, offset: int = 0, waiting_before: datetime | None = None
    ) -> list[ApprovalRequest]:
        params = {"p_limit": limit, "p_offset": offset, "p_before": waiting_before}
        return [
            ApprovalRequest(
                decode_task(row["task"]),
                None if row["step"] is None else decode_step(row["step"]),
            )
            for row in self._call("agentq_list_approvals", params) or []
        ]

    # --- schedules ----------------------------------------------------------

    def set_schedule(
        self, task_id: str, *, cron: str, timezone: str, next_run_at: datetime, now: datetime
    ) -> Task | None:
        params = {"p_task_id": task_id, "p_cron": cron, "p_timezone": timezone, "p_next_run_at": next_run_at}
        return self._task("agentq_set_schedule", {**params, "p_now": now}, lambda t: False)  # idempotent

    def clear_schedule(self, task_id: str, *, now: datetime) -> Task | None:
        return self._task(
            "agentq_clear_schedule",
            {"p_task_id": task_id, "p_now": now},
            lambda t: t.schedule_cron is None and t.updated_at == now,
        )

    def due_schedules(self, *, now: datetime, limit: int = 1000) -> list[DueSchedule]:
        tasks = self._tasks("agentq_due_schedules", {"p_now": now, "p_limit": limit})
        return [
            DueSchedule(task.id, task.schedule_cron or "", task.schedule_timezone or "UTC", task.next_run_at)
            for task in tasks
            if task.next_run_at is not None
        ]

    def fire_schedules(self, firings: list[Firing], *, now: datetime) -> list[FiredSchedule]:
        if not firings:
            return []
        params = {
            "p_task_ids": [firing.task_id for firing in firings],
            "p_due": [firing.due_at for firing in firings],
            "p_next": [firing.next_run_at for firing in firings],
            "p_now": now,
        }
        return [
            FiredSchedule(row["id"], row["kind"], not row["busy"], row["priority"], row["organization_id"])
            for row in self._call("agentq_fire_schedules", params) or []
        ]

    def list_schedules(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        return self._tasks("agentq_list_schedules", {"p_limit": limit, "p_offset": offset})

    # --- queue views --------------------------------------------------------

    def list_failed(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        return self._tasks("agentq_list_failed", {"p_limit": limit, "p_offset": offset})

    def organization_spend(self, organization_id: str, *, since: datetime) -> Decimal:
        params = {"p_organization_id": organization_id, "p_since": since}
        return Decimal(str(self._call("agentq_organization_spend", params)))

    def queue_counts(self, *, now: datetime) -> QueueCounts:
        counts = self._call("agentq_queue_counts", {"p_now": now})
        return QueueCounts(**{key: int(value) for key, value in counts.items()})

    def cleanup(self, policy: RetentionPolicy, *, now: datetime) -> CleanupResult:
        result = self._call(
            "agentq_cleanup",
            {
                "p_now": now,
                "p_completed_cutoff": now - timedelta(seconds=policy.completed_age_s),
                "p_completed_keep": policy.completed_count,
                "p_failed_cutoff": now - timedelta(seconds=policy.failed_age_s),
                "p_failed_keep": policy.failed_count,
            },
        )
        return CleanupResult(
            int(result["archived_completed"]),
            int(result["archived_failed"]),
            int(result["deleted_runs"]),
            int(result["deleted_steps"]),
        )

    # --- the operator's views and actions -----------------------------------

    def list_tasks(
        self,
        task_filter: TaskFilter,
        *,
        limit: int,
        after: TaskKey | None = None,
        before: TaskKey | None = None,
    ) -> list[TaskSummary]:
        params: dict[str, Any] = {
            "p_limit": limit,
            "p_status": task_filter.status.value if task_filter.status is not None else None,
            "p_agent_id": task_filter.agent_id,
            "p_organization_id": task_filter.organization_id,
            "p_kind": task_filter.kind,
            "p_created_from": task_filter.created_from,
            "p_created_to": task_filter.created_to,
            "p_title_pattern": title_pattern(task_filter.title),
        }
        if after is not None:
            params.update(p_after_created=after.created_at, p_after_id=after.id)
        elif before is not None:
            params.update(p_before_created=before.created_at, p_before_id=before.id)
        given = {name: value for name, value in params.items() if value is not None}
        return [summary_from_json(row) for row in self._call("agentq_list_tasks", given) or []]

    def overview(self, *, now: datetime, organization_id: str | None = None, top: int = 20) -> Overview:
        hour_ago, day_start, month_start = overview_windows(now)
        params: dict[str, Any] = {
            "p_now": now,
            "p_hour_ago": hour_ago,
            "p_day_start": day_start,
            "p_month_start": month_start,
            "p_top": top,
        }
        if organization_id is not None:
            params["p_organization_id"] = organization_id
        return overview_from_json(self._call("agentq_overview", params))

    def disable_schedule(self, task_id: str, *, now: datetime) -> Task | None:
        return self._task(
            "agentq_disable_schedule",
            {"p_task_id": task_id, "p_now": now},
            lambda t: t.schedule_cron is not None and t.next_run_at is None and t.updated_at == now,
        )

    def enable_schedule(self, task_id: str, *, next_run_at: datetime, now: datetime) -> Task | None:
        return self._task(
            "agentq_enable_schedule",
            {"p_task_id": task_id, "p_next_run_at": next_run_at, "p_now": now},
            lambda t: t.next_run_at == next_run_at and t.updated_at == now,
        )

    def fire_schedule_now(self, task_id: str, *, now: datetime) -> Task | None:
        return self._task(
            "agentq_fire_schedule_now",
            {"p_task_id": task_id, "p_now": now},
            lambda t: t.status == TaskStatus.QUEUED and t.last_run_at == now and t.queued_at == now,
        )


def _time_or_none(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def summary_from_json(row: Mapping[str, Any]) -> TaskSummary:
    """A :class:`TaskSummary` from one object of ``agentq_list_tasks``'s array."""
    return TaskSummary(
        id=str(row["id"]),
        title=row["title"],
        status=TaskStatus(row["status"]),
        priority=int(row["priority"]),
        task_type=row["task_type"],
        agent_id=str(row["agent_id"]),
        organization_id=str(row["organization_id"]),
        agent_name=row["agent_name"],
        kind=row["kind"],
        attempts=int(row["attempts"]),
        max_attempts=int(row["max_attempts"]),
        error=row["error"],
        cost_usd=Decimal(str(row["cost_usd"])),
        schedule_cron=row["schedule_cron"],
        next_run_at=_time_or_none(row["next_run_at"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        started_at=_time_or_none(row["started_at"]),
        completed_at=_time_or_none(row["completed_at"]),
        failed_at=_time_or_none(row["failed_at"]),
        archived_at=_time_or_none(row["archived_at"]),
    )


def overview_from_json(data: Mapping[str, Any]) -> Overview:
    """An :class:`Overview` from ``agentq_overview``'s object."""
    counts = {str(status): int(count) for status, count in data["counts"]["by_status"].items()}
    counts.update(waiting=int(data["counts"]["waiting"]), delayed=int(data["counts"]["delayed"]))
    minutes = tuple(
        MinuteCount(datetime.fromisoformat(item["minute"]), int(item["completed"]), int(item["failed"]))
        for item in data["per_minute"]
    )
    return Overview(
        counts=counts,
        completed_last_hour=sum(minute.completed for minute in minutes),
        failed_last_hour=sum(minute.failed for minute in minutes),
        per_minute=minutes,
        depth_by_priority={int(key): int(count) for key, count in data["depth_by_priority"].items()},
        depth_by_organization=tuple((str(org), int(count)) for org, count in data["depth_by_organization"]),
        spend=tuple(
            OrganizationSpend(str(item["organization_id"]), Decimal(item["today"]), Decimal(item["month"]))
            for item in data["spend"]
        ),
    )


def complete_item(
    task_id: str,
    run_id: str,
    result: dict[str, Any],
    usage: Usage,
    transcript: list[dict[str, Any]] | None,
    now: datetime,
    step: StepRecord | None = None,
) -> Row:
    """One completion, as :meth:`SqlFunctionStore._complete_one` and a batch of them take it."""
    item: Row = {"task_id": task_id, "run_id": run_id, "now": now, "result": storable_json(result)}
    item.update({column: getattr(usage, column) for column in USAGE_COLUMNS})
    item.update(cost_usd=usage.cost_usd, transcript=storable_json(transcript), step=step_json(step))
    return item


def step_json(step: StepRecord | None) -> Row | None:
    """A whole step as ``agentq_record_step``'s ``p_step`` (and ``agentq_finish``'s) takes it: plain JSON."""
    if step is None:
        return None
    return {
        "firing": step.firing,
        "seq": step.seq,
        "kind": StepKind(step.kind).value,
        "name": storable_text(step.name),
        "input": storable_json(step.input),
        "started_at": step.started_at.isoformat(),
        "status": step_end(step.status),
        "output": storable_json(step.output),
        "finished_at": step.finished_at.isoformat(),
        "input_tokens": step.input_tokens,
        "output_tokens": step.output_tokens,
        "cost_usd": None if step.cost_usd is None else str(step.cost_usd),
        "error": storable_text(step.error),
        "replaces": step.replaces,
    }


def json_item(item: Mapping[str, Any]) -> Row:
    """``item`` with its values as they travel inside a JSON argument (a batch function's array)."""
    return {name: json_value(value) for name, value in item.items()}
