"""The Supabase :class:`~taskstore.base.TaskStore`, through ``supabase-py`` (PostgREST).

Every method calls its ``agentq_*`` SQL function (``taskstore/sql/functions.sql``, the same ones the
Postgres store calls) through PostgREST's ``rpc``; :mod:`taskstore.sql_store` builds the arguments and
reads the answers. This module is the transport: the client, its errors, the re-send rule.

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
from collections.abc import Callable
from typing import Any

import httpx

from taskstore.errors import DuplicateTask, SchemaMissing, StoreUnavailable
from taskstore.schema import MIGRATIONS
from taskstore.sql_store import Applied, SqlFunctionStore, json_value, signatures

logger = logging.getLogger(__name__)

#: PostgreSQL's unique-violation code, as PostgREST reports it (HTTP 409).
_UNIQUE_VIOLATION = "23505"


class SupabaseTaskStore(SqlFunctionStore):
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

    def _call(self, function: str, params: dict[str, Any], applied: Applied = None) -> Any:
        """``rpc(function, params)``. A write is re-sent once after a transport error or a 5xx (see the
        module's write-retry rule): when the re-send finds nothing to change, or the id taken, ``applied``
        says whether the first send took effect, and its answer (if not ``None``) is returned instead.
        A read (a ``STABLE`` function) is re-sent once after a transport error only, as supabase-py
        retries a GET."""
        arguments = {name: json_value(value) for name, value in params.items()}

        def request() -> Any:
            return self._get_client().rpc(function, arguments).execute()

        writes = signatures()[function].writes
        try:
            return self._unique(request)
        except StoreUnavailable as first:
            if not writes and not isinstance(first.__cause__, httpx.TransportError):
                raise
            logger.warning("Supabase call %s failed in transit (%s); re-sending it once", function, first)
        try:
            result = self._unique(request)
        except DuplicateTask:
            if applied is None or (earlier := applied()) is None:
                raise
            return earlier
        if applied is not None and not result:
            earlier = applied()
            if earlier is not None:
                return earlier
        return result

    def _unique(self, request: Callable[[], Any]) -> Any:
        """:meth:`_send`, a unique violation (an id taken) raised as :class:`DuplicateTask`."""
        from postgrest.exceptions import APIError

        try:
            return self._send(request)
        except APIError as exc:
            if exc.code == _UNIQUE_VIOLATION:
                raise DuplicateTask(
                    f"an id is given twice or already exists; nothing inserted ({exc.message})"
                ) from None
            raise

    # --- schema -------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Check that the migration is applied (PostgREST cannot run DDL); applies nothing itself.

        Raises:
            SchemaMissing: When a migration is missing, naming the file to apply.
        """
        self.ensure_schema()
        return []

    def ensure_schema(self) -> None:
        """Raise :class:`SchemaMissing` naming the migration files to apply when any is missing."""
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
