"""The Supabase :class:`~taskstore.base.TaskStore`, through ``supabase-py`` (PostgREST).

Single-row compare-and-set transitions are conditional updates
(``.update(...).eq("id", x).eq("status", "queued")``: no row returned = lost race); multi-step
atomic work (claim, finishing a run, postponing, stalled recovery, firing schedules, cleanup, stats)
calls the ``agentq_*`` SQL functions of migration ``0002_supabase`` through ``rpc``.

Workers use the secret (service role) key, which bypasses row-level security: every query
filters explicitly. The client is created on first use, never at construction; the key is never
logged or shown in ``repr``.

**Write-retry rule.** supabase-py retries only GET/HEAD, so a write whose response was lost may or
may not have been applied. Every write here is a compare-and-set keyed by ids the caller generated
(task id, run id) and the caller's ``now``, so re-sending it can never apply it twice. On a transport
error (connection reset, timeout) the store re-sends the write once; if the re-send reports "lost
the race", it reads the row and, when the row shows *this* write's effect (e.g. ``current_run_id``
is our run id, our run ended with our status at our ``now``, an insert's id already exists), returns
success. So a write that timed out is neither lost nor applied twice. Batch operations (stalled
recovery, schedule firing, cleanup) are re-sent once as well; what the lost first response applied is
not reported again, and the reconciler re-enqueues any task it left queued.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from taskstore.base import new_id
from taskstore.errors import DuplicateTask, StoreUnavailable, TaskStoreError
from taskstore.models import (
    Agent,
    Claim,
    CleanupResult,
    DueSchedule,
    FiredSchedule,
    Firing,
    NewAgent,
    NewTask,
    QueueCounts,
    RetentionPolicy,
    Run,
    RunStatus,
    StalledTask,
    Task,
    TaskStatus,
    Usage,
    WaitingTask,
)
from taskstore.rows import agent_from_row, in_order, run_from_row, task_from_row
from taskstore.rules import STALLED_ERROR, STALLED_LIMIT_ERROR, unrunnable_statuses
from taskstore.schema import AGENTS, MIGRATIONS, RUNS, TASKS, CreateTable
from taskstore.storable import storable_json, storable_text

logger = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, Any]

TASKS_TABLE = "ai_agent_tasks"
AGENTS_TABLE = "ai_agents"
RUNS_TABLE = "ai_agent_task_runs"
#: PostgreSQL's unique-violation code, as PostgREST reports it (HTTP 409).
_UNIQUE_VIOLATION = "23505"


class SchemaMissing(TaskStoreError):
    """The Supabase project lacks the migration (tables or ``agentq_*`` functions)."""


def _decoder(table: CreateTable) -> Callable[[Mapping[str, Any]], Row]:
    """Turn PostgREST's JSON values (ISO timestamps, JSON numbers) into the stores' Python values."""
    kinds = {column.name: column.type for column in table.columns}

    def decode(row: Mapping[str, Any]) -> Row:
        decoded = dict(row)
        for name, kind in kinds.items():
            value = decoded.get(name)
            if value is None:
                continue
            if kind == "timestamp":
                decoded[name] = datetime.fromisoformat(value)
            elif kind == "money":
                decoded[name] = Decimal(str(value))
            elif kind == "real":
                decoded[name] = float(value)
        return decoded

    return decode


_task_row = _decoder(TASKS)
_agent_row = _decoder(AGENTS)
_run_row = _decoder(RUNS)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _usage(usage: Usage, transcript: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {
        "p_input_tokens": usage.input_tokens,
        "p_output_tokens": usage.output_tokens,
        "p_cached_input_tokens": usage.cached_input_tokens,
        "p_reasoning_tokens": usage.reasoning_tokens,
        # Exact decimal text: a JSON number would round-trip through a float.
        "p_cost_usd": str(usage.cost_usd) if usage.cost_usd is not None else None,
        "p_transcript": storable_json(transcript),
    }


def _new_task_row(task: NewTask, now: datetime) -> Row:
    """The JSON of a new ``pending`` task row."""
    return {
        "id": task.id or new_id(),
        "agent_id": task.agent_id,
        "organization_id": task.organization_id,
        "title": task.title,
        "description": task.description,
        "task_type": task.task_type,
        "context": task.context,
        "status": "pending",
        "priority": task.priority,
        "max_attempts": task.max_attempts,
        "schedule_timezone": task.schedule_timezone,
        "created_at": _time(now),
        "updated_at": _time(now),
    }


class SupabaseTaskStore:
    """Task store on a Supabase project, through its REST API (PostgREST) with the service key."""

    def __init__(self, url: str, key: str, *, timeout_s: float = 30.0) -> None:
        self._url = url.rstrip("/")
        self._key = key
        self._timeout_s = timeout_s
        self._client: Any = None
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()
        #: The HTTP status of this thread's last response (an ``APIError`` does not carry it).
        self._status = threading.local()

    def __repr__(self) -> str:
        return f"SupabaseTaskStore(url={self._url!r})"

    # --- the client ---------------------------------------------------------

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from supabase import ClientOptions, create_client

                # Our own httpx client carries the timeout (supabase-py's timeout option is deprecated).
                self._http = httpx.Client(
                    timeout=self._timeout_s,
                    follow_redirects=True,
                    event_hooks={"response": [self._note_status]},
                )
                options = ClientOptions(
                    auto_refresh_token=False, persist_session=False, httpx_client=self._http
                )
                self._client = create_client(self._url, self._key, options)
            return self._client

    def close(self) -> None:
        with self._lock:
            http, self._http, self._client = self._http, None, None
        if http is not None:
            http.close()

    def reserve_connections(self, count: int) -> None:
        return None  # httpx pools connections per host; PostgREST owns the database connections

    def _table(self, name: str) -> Any:
        return self._get_client().table(name)

    def _note_status(self, response: httpx.Response) -> None:
        self._status.code = response.status_code

    def _send(self, request: Callable[[], Any]) -> Any:
        """Run a built request. An unreachable server or an HTTP 5xx answer (PostgREST without its
        database, a gateway's 502/503/504) raises :class:`StoreUnavailable`; a 4xx stays an ``APIError``.
        """
        from postgrest.exceptions import APIError

        self._status.code = None
        try:
            return request().data
        except APIError as exc:
            if exc.code in ("PGRST202", "PGRST205", "42883", "42P01"):
                raise SchemaMissing(
                    f"the Supabase schema is missing ({exc.code}: {exc.message}); apply the migration "
                    "supabase/migrations/*_agentq.sql (supabase db push, or psql -f)"
                ) from None
            status = getattr(self._status, "code", None)
            if isinstance(status, int) and status >= 500:
                raise StoreUnavailable(
                    f"Supabase answered HTTP {status} at {self._url}: {exc.code}: {exc.message}"
                ) from exc
            raise
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"Supabase unreachable at {self._url}: {type(exc).__name__}") from exc

    def _write(self, request: Callable[[], Any], applied: Callable[[], T | None] | None = None) -> Any:
        """Send a write; on a transport error re-send it once (see the module's write-retry rule).

        ``applied`` is asked, after a re-send that found nothing to change, whether the first send
        took effect; its answer (if not ``None``) is returned instead.
        """
        try:
            return self._send(request)
        except StoreUnavailable as first:
            logger.warning("Supabase write failed in transit (%s); re-sending it once", first)
        result = self._send(request)
        if applied is not None and not result:
            earlier = applied()
            if earlier is not None:
                return earlier
        return result

    def _rpc(
        self, function: str, params: dict[str, Any], applied: Callable[[], T | None] | None = None
    ) -> Any:
        return self._write(lambda: self._get_client().rpc(function, params).execute(), applied)

    def _read(self, build: Callable[[], Any]) -> list[Row]:
        """A read; supabase-py itself retries GETs on network errors and 503/520."""
        data = self._send(lambda: build().execute())
        return list(data or [])

    # --- schema -------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Check that the migration is applied (PostgREST cannot run DDL); applies nothing itself.

        Raises:
            SchemaMissing: When a migration is missing, naming the file to apply.
        """
        from postgrest.exceptions import APIError

        try:
            present = set(self._send(lambda: self._get_client().rpc("agentq_schema_version", {}).execute()))
        except APIError as exc:
            raise SchemaMissing(f"cannot read the Supabase schema version: {exc.message}") from None
        missing = [migration.name for migration in MIGRATIONS if migration.name not in present]
        if missing:
            raise SchemaMissing(
                f"the Supabase project lacks migration(s) {', '.join(missing)}: apply "
                "supabase/migrations/*_agentq.sql with `supabase db push` or `psql -f`"
            )
        return []

    # --- agents and tasks -------------------------------------------------

    def _insert(self, table: str, row: dict[str, Any], read: Callable[[str], T | None]) -> Row | T:
        from postgrest.exceptions import APIError

        try:
            return dict(self._send(lambda: self._table(table).insert(row).execute())[0])
        except StoreUnavailable as first:
            logger.warning("Supabase insert failed in transit (%s); re-sending it once", first)
        try:
            return dict(self._send(lambda: self._table(table).insert(row).execute())[0])
        except APIError as exc:
            existing = read(row["id"]) if exc.code == _UNIQUE_VIOLATION else None
            if existing is None:
                raise
            return existing  # the first send was applied: same caller-generated id

    def create_agent(self, agent: NewAgent, *, now: datetime) -> Agent:
        row = {
            "id": agent.id or new_id(),
            "organization_id": agent.organization_id,
            "name": agent.name,
            "kind": agent.kind,
            "provider": agent.provider,
            "model": agent.model,
            "system_prompt": agent.system_prompt,
            "allowed_tools": list(agent.allowed_tools),
            "temperature": agent.temperature,
            "max_tokens": agent.max_tokens,
            "max_turns": agent.max_turns,
            "is_active": agent.is_active,
            "base_url": agent.base_url,
            "tool_timeout_s": agent.tool_timeout_s,
            "run_time_limit_s": agent.run_time_limit_s,
            "fallback_provider": agent.fallback_provider,
            "fallback_model": agent.fallback_model,
            "created_at": _time(now),
            "updated_at": _time(now),
        }
        created = self._insert(AGENTS_TABLE, row, self.get_agent)
        return created if isinstance(created, Agent) else agent_from_row(_agent_row(created))

    def get_agent(self, agent_id: str) -> Agent | None:
        rows = self._read(lambda: self._table(AGENTS_TABLE).select("*").eq("id", agent_id).limit(1))
        return agent_from_row(_agent_row(rows[0])) if rows else None

    def create_task(self, task: NewTask, *, now: datetime) -> Task:
        created = self._insert(TASKS_TABLE, _new_task_row(task, now), self.get_task)
        return created if isinstance(created, Task) else task_from_row(_task_row(created))

    def get_task(self, task_id: str) -> Task | None:
        rows = self._read(lambda: self._table(TASKS_TABLE).select("*").eq("id", task_id).limit(1))
        return task_from_row(_task_row(rows[0])) if rows else None

    # --- many tasks at once (bulk enqueue, migration 0003) ----------------------

    def create_tasks(self, tasks: Sequence[NewTask], *, now: datetime) -> list[Task]:
        """One POST of a JSON array (PostgREST inserts it in one statement: all rows or none).

        A lost response is re-sent once; if the re-send finds the ids taken and every row is there,
        the first send was applied and its rows are returned.
        """
        from postgrest.exceptions import APIError

        if not tasks:
            return []
        rows = [_new_task_row(task, now) for task in tasks]
        ids = [row["id"] for row in rows]

        def insert() -> Any:
            return self._table(TASKS_TABLE).insert(rows).execute()

        try:
            try:
                created = self._send(insert)
            except StoreUnavailable as first:
                logger.warning("Supabase insert failed in transit (%s); re-sending it once", first)
                created = self._send(insert)
        except APIError as exc:
            if exc.code != _UNIQUE_VIOLATION:
                raise
            existing = self.get_tasks(ids)
            if len(existing) == len(ids) and all(task.created_at == now for task in existing):
                return existing  # the first send was applied: same caller-generated ids
            raise DuplicateTask(
                f"a task id is given twice or already exists; nothing inserted ({exc.message})"
            ) from None
        return in_order((task_from_row(_task_row(row)) for row in created), ids)

    def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        rows = self._rpc("agentq_get_tasks", {"p_task_ids": list(task_ids)}) or []
        return in_order((task_from_row(_task_row(row)) for row in rows), task_ids, missing_ok=True)

    def mark_queued_many(
        self, task_ids: Sequence[str], *, priority: int | None, run_at: datetime, now: datetime
    ) -> list[Task] | None:
        """``agentq_mark_queued_many``: all of them or none, in one round trip."""
        ids = list(task_ids)

        def applied() -> list[Row] | None:
            # The re-send found nothing pending: the first send was applied if every task shows its effect.
            rows = list(self._rpc("agentq_get_tasks", {"p_task_ids": ids}) or [])
            tasks = [task_from_row(_task_row(row)) for row in rows]
            mine = len(tasks) == len(ids) and all(
                task.status == TaskStatus.QUEUED and task.queued_at == now for task in tasks
            )
            return rows if mine else None

        params = {"p_task_ids": ids, "p_priority": priority, "p_run_at": _time(run_at), "p_now": _time(now)}
        rows = self._rpc("agentq_mark_queued_many", params, applied) or []
        if len(rows) != len(ids):
            return None
        return in_order((task_from_row(_task_row(row)) for row in rows), ids)

    def revert_queued_many(self, task_ids: Sequence[str], *, queued_at: datetime, now: datetime) -> int:
        params = {"p_task_ids": list(task_ids), "p_queued_at": _time(queued_at), "p_now": _time(now)}
        return int(self._rpc("agentq_revert_queued_many", params) or 0)

    def get_runs(self, task_id: str) -> list[Run]:
        rows = self._read(
            lambda: (
                self._table(RUNS_TABLE)
                .select("*")
                .eq("task_id", task_id)
                .order("attempt")
                .order("started_at")
            )
        )
        return [run_from_row(_run_row(row)) for row in rows]

    # --- single-row compare-and-set updates --------------------------------

    def _update(
        self,
        changes: dict[str, Any],
        filters: Callable[[Any], Any],
        applied: Callable[[Task], bool] | None = None,
        task_id: str | None = None,
    ) -> list[Row]:
        """``UPDATE ai_agent_tasks SET changes WHERE filters RETURNING *`` as one conditional PATCH."""

        def request() -> Any:
            return filters(self._table(TASKS_TABLE).update(changes)).execute()

        def earlier() -> list[Row] | None:
            if applied is None or task_id is None:
                return None
            rows = self._read(lambda: self._table(TASKS_TABLE).select("*").eq("id", task_id).limit(1))
            return rows if rows and applied(task_from_row(_task_row(rows[0]))) else None

        return list(self._write(request, earlier) or [])

    def _one_task(self, rows: list[Row]) -> Task | None:
        return task_from_row(_task_row(rows[0])) if rows else None

    def mark_queued(
        self, task_id: str, *, priority: int | None, run_at: datetime, now: datetime
    ) -> Task | None:
        changes: dict[str, Any] = {
            "status": "queued",
            "run_at": _time(run_at),
            "queued_at": _time(now),
            "archived_at": None,
            "updated_at": _time(now),
        }
        if priority is not None:
            changes["priority"] = priority
        rows = self._update(
            changes,
            lambda q: q.eq("id", task_id).eq("status", "pending"),
            lambda t: t.status == TaskStatus.QUEUED and t.queued_at == now,
            task_id,
        )
        return self._one_task(rows)

    def revert_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        rows = self._update(
            {"status": "pending", "run_at": None, "queued_at": None, "updated_at": _time(now)},
            lambda q: q.eq("id", task_id).eq("status", "queued").eq("queued_at", _time(queued_at)),
            lambda t: t.status == TaskStatus.PENDING and t.queued_at is None and t.updated_at == now,
            task_id,
        )
        return bool(rows)

    def touch_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        rows = self._update(
            {"queued_at": _time(now), "updated_at": _time(now)},
            lambda q: q.eq("id", task_id).eq("status", "queued").eq("queued_at", _time(queued_at)),
            lambda t: t.status == TaskStatus.QUEUED and t.queued_at == now and queued_at != now,
            task_id,
        )
        return bool(rows)

    def renew_leases(
        self, held: Sequence[tuple[str, str]], *, lease_until: datetime, now: datetime
    ) -> list[str]:
        if not held:
            return []
        task_ids = [task_id for task_id, _ in held]
        run_ids = [run_id for _, run_id in held]
        # Idempotent (no condition on the old lease): a re-send returns the same ids. Run ids are
        # unique, so a task matches only under the run that holds it.
        rows = self._update(
            {"lease_expires_at": _time(lease_until)},
            lambda q: (
                q.in_("id", task_ids).in_("current_run_id", run_ids).eq("status", "running").select("id")
            ),
        )
        return [row["id"] for row in rows]

    def request_cancel(self, task_id: str, *, now: datetime) -> Task | None:
        rows = self._update(
            {"cancel_requested_at": _time(now), "updated_at": _time(now)},
            lambda q: q.eq("id", task_id).eq("status", "running"),
            lambda t: t.status == TaskStatus.RUNNING and t.cancel_requested_at == now,
            task_id,
        )
        return self._one_task(rows)

    def cancel_requested(self, task_id: str) -> bool:
        rows = self._read(
            lambda: self._table(TASKS_TABLE).select("cancel_requested_at").eq("id", task_id).limit(1)
        )
        return bool(rows and rows[0]["cancel_requested_at"] is not None)

    def cancel(self, task_id: str, *, now: datetime) -> Task | None:
        rows = self._update(
            {"status": "cancelled", "run_at": None, "updated_at": _time(now)},
            lambda q: q.eq("id", task_id).in_("status", ["pending", "queued"]),
            lambda t: t.status == TaskStatus.CANCELLED and t.updated_at == now,
            task_id,
        )
        return self._one_task(rows)

    def requeue_failed(self, task_id: str, *, run_at: datetime, now: datetime) -> Task | None:
        rows = self._update(
            {
                "status": "queued",
                "attempts": 0,
                "stalled_count": 0,
                "error": None,
                "postponed_count": 0,
                "cancel_requested_at": None,
                "run_at": _time(run_at),
                "queued_at": _time(now),
                "failed_at": None,
                "archived_at": None,
                "updated_at": _time(now),
            },
            lambda q: q.eq("id", task_id).eq("status", "failed"),
            lambda t: t.status == TaskStatus.QUEUED and t.queued_at == now and t.attempts == 0,
            task_id,
        )
        return self._one_task(rows)

    def set_schedule(
        self, task_id: str, *, cron: str, timezone: str, next_run_at: datetime, now: datetime
    ) -> Task | None:
        rows = self._update(  # idempotent: a re-send sets the same values
            {
                "schedule_cron": cron,
                "schedule_timezone": timezone,
                "next_run_at": _time(next_run_at),
                "updated_at": _time(now),
            },
            lambda q: q.eq("id", task_id).eq("task_type", "scheduled"),
        )
        return self._one_task(rows)

    def clear_schedule(self, task_id: str, *, now: datetime) -> Task | None:
        rows = self._update(
            {"schedule_cron": None, "next_run_at": None, "updated_at": _time(now)},
            lambda q: q.eq("id", task_id).not_.is_("schedule_cron", "null"),
            lambda t: t.schedule_cron is None and t.updated_at == now,
            task_id,
        )
        return self._one_task(rows)

    # --- multi-step transitions (SQL functions) -----------------------------

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
        def applied() -> dict[str, Any] | None:
            task = self.get_task(task_id)
            if task is None or task.status != TaskStatus.RUNNING or task.current_run_id != run_id:
                return None
            return {"task": task, "agent": self.get_agent(task.agent_id)}

        data = self._rpc(
            "agentq_claim",
            {
                "p_task_id": task_id,
                "p_run_id": run_id,
                "p_worker_id": worker_id,
                "p_lease_until": _time(lease_until),
                "p_now": _time(now),
                "p_max_running_in_org": max_running_in_org,
            },
            applied,
        )
        if not data:
            return None
        task = data["task"]
        agent = data["agent"]
        return Claim(
            task=task if isinstance(task, Task) else task_from_row(_task_row(task)),
            agent=agent if isinstance(agent, Agent) or agent is None else agent_from_row(_agent_row(agent)),
            run_id=run_id,
        )

    def _run_ended(
        self, task_id: str, run_id: str, status: RunStatus, now: datetime
    ) -> Callable[[], bool | None]:
        def applied() -> bool | None:
            ended = any(
                run.id == run_id and run.status == status and run.finished_at == now
                for run in self.get_runs(task_id)
            )
            return True if ended else None

        return applied

    def _finish(
        self,
        task_id: str,
        run_id: str,
        *,
        status: str,
        run_status: RunStatus,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
        **extra: Any,
    ) -> bool:
        params = {
            "p_task_id": task_id,
            "p_run_id": run_id,
            "p_status": status,
            "p_run_status": run_status.value,
            "p_now": _time(now),
            **_usage(usage, transcript),
            **extra,
        }
        return bool(self._rpc("agentq_finish", params, self._run_ended(task_id, run_id, run_status, now)))

    def complete(
        self,
        task_id: str,
        run_id: str,
        *,
        result: dict[str, Any],
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        return self._finish(
            task_id,
            run_id,
            status="completed",
            run_status=RunStatus.COMPLETED,
            usage=usage,
            transcript=transcript,
            now=now,
            p_result=storable_json(result),
        )

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
            task_id,
            run_id,
            status="failed" if retry_at is None else "queued",
            run_status=RunStatus.FAILED,
            usage=usage,
            transcript=transcript,
            now=now,
            p_error=storable_text(error),
            p_stacktrace=storable_text(stacktrace),
            p_retry_at=_time(retry_at),
        )

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
            task_id,
            run_id,
            status="cancelled",
            run_status=RunStatus.CANCELLED,
            usage=usage,
            transcript=transcript,
            now=now,
            p_error="cancelled on request",
        )

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
        params = {
            "p_task_id": task_id,
            "p_run_id": run_id,
            "p_reason": storable_text(reason),
            "p_run_at": _time(run_at),
            "p_now": _time(now),
            **_usage(usage, transcript),
        }
        applied = self._run_ended(task_id, run_id, RunStatus.POSTPONED, now)
        return bool(self._rpc("agentq_postpone", params, applied))

    def recover_stalled(
        self, *, max_stalled_count: int, now: datetime, limit: int = 100
    ) -> list[StalledTask]:
        rows = self._rpc(
            "agentq_recover_stalled",
            {
                "p_now": _time(now),
                "p_max_stalled_count": max_stalled_count,
                "p_error": STALLED_ERROR,
                "p_limit_error": STALLED_LIMIT_ERROR,
                "p_limit": limit,
            },
        )
        return [
            StalledTask(
                row["id"], row["kind"], row["status"] == "queued", row["stalled_count"], row["attempts"]
            )
            for row in rows or []
        ]

    def _waiting(self, function: str, before: datetime, limit: int) -> list[WaitingTask]:
        rows = self._rpc(function, {"p_before": _time(before), "p_limit": limit})
        return [
            WaitingTask(row["id"], row["kind"], datetime.fromisoformat(row["since"])) for row in rows or []
        ]

    def find_pending(self, *, created_before: datetime, limit: int = 500) -> list[WaitingTask]:
        return self._waiting("agentq_find_pending", created_before, limit)

    def find_queued(self, *, queued_before: datetime, limit: int = 1000) -> list[WaitingTask]:
        return self._waiting("agentq_find_queued", queued_before, limit)

    def fire_schedules(self, firings: list[Firing], *, now: datetime) -> list[FiredSchedule]:
        if not firings:
            return []
        rows = self._rpc(
            "agentq_fire_schedules",
            {
                "p_task_ids": [firing.task_id for firing in firings],
                "p_due": [_time(firing.due_at) for firing in firings],
                "p_next": [_time(firing.next_run_at) for firing in firings],
                "p_now": _time(now),
            },
        )
        return [
            FiredSchedule(row["id"], row["kind"], not row["busy"], row["priority"], row["organization_id"])
            for row in rows or []
        ]

    def organization_spend(self, organization_id: str, *, since: datetime) -> Decimal:
        spent = self._rpc(
            "agentq_organization_spend", {"p_organization_id": organization_id, "p_since": _time(since)}
        )
        return Decimal(str(spent))

    def queue_counts(self, *, now: datetime) -> QueueCounts:
        counts = self._rpc("agentq_queue_counts", {"p_now": _time(now)})
        return QueueCounts(**{key: int(value) for key, value in counts.items()})

    def cleanup(self, policy: RetentionPolicy, *, now: datetime) -> CleanupResult:
        result = self._rpc(
            "agentq_cleanup",
            {
                "p_now": _time(now),
                "p_completed_cutoff": _time(now - timedelta(seconds=policy.completed_age_s)),
                "p_completed_keep": policy.completed_count,
                "p_failed_cutoff": _time(now - timedelta(seconds=policy.failed_age_s)),
                "p_failed_keep": policy.failed_count,
            },
        )
        return CleanupResult(
            int(result["archived_completed"]), int(result["archived_failed"]), int(result["deleted_runs"])
        )

    # --- lists --------------------------------------------------------------

    def fail_unrunnable(
        self, task_id: str, *, error: str, now: datetime, idle_too: bool = False
    ) -> Task | None:
        rows = self._update(
            {
                "status": "failed",
                "error": storable_text(error),
                "run_at": None,
                "failed_at": _time(now),
                "updated_at": _time(now),
            },
            lambda q: q.eq("id", task_id).in_("status", list(unrunnable_statuses(idle_too))),
            lambda t: t.status == TaskStatus.FAILED and t.failed_at == now,
            task_id,
        )
        return self._one_task(rows)

    def list_failed(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        rows = self._read(
            lambda: (
                self._table(TASKS_TABLE)
                .select("*")
                .eq("status", "failed")
                .is_("archived_at", "null")
                .order("failed_at", desc=True)
                .order("id", desc=True)
                .limit(limit)
                .offset(offset)
            )
        )
        return [task_from_row(_task_row(row)) for row in rows]

    def due_schedules(self, *, now: datetime, limit: int = 1000) -> list[DueSchedule]:
        rows = self._read(
            lambda: (
                self._table(TASKS_TABLE)
                .select("id,schedule_cron,schedule_timezone,next_run_at")
                .not_.is_("schedule_cron", "null")
                .lte("next_run_at", _time(now))
                .order("next_run_at")
                .order("id")
                .limit(limit)
            )
        )
        return [
            DueSchedule(
                row["id"],
                row["schedule_cron"],
                row["schedule_timezone"] or "UTC",
                datetime.fromisoformat(row["next_run_at"]),
            )
            for row in rows
        ]

    def list_schedules(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        rows = self._read(
            lambda: (
                self._table(TASKS_TABLE)
                .select("*")
                .not_.is_("schedule_cron", "null")
                .order("next_run_at", nullsfirst=False)
                .order("id")
                .limit(limit)
                .offset(offset)
            )
        )
        return [task_from_row(_task_row(row)) for row in rows]
