"""A local PostgREST double backed by the real PostgreSQL, so supabase-py's own code path runs.

It implements the subset of PostgREST (v12) that the Supabase store and a Supabase application use:

- ``GET /rest/v1/<table>?select=a,b&col=eq.X&col=in.(a,b)&col=is.null&col=not.is.null&col=lt.X
  &order=col.asc.nullslast,col2.desc&limit=N&offset=M`` (``Prefer: count=exact`` adds the total to
  ``Content-Range``; ``Accept: application/vnd.pgrst.object+json`` returns one object or 406);
- ``POST /rest/v1/<table>`` (a JSON object or array; ``?columns=``; ``Prefer: return=…``), 201;
- ``PATCH`` and ``DELETE /rest/v1/<table>?<filters>`` returning the affected rows (``select=`` honoured);
- ``POST /rest/v1/rpc/<function>`` with named JSON arguments, each cast to the parameter's SQL type;
  a scalar result is returned as its JSON value, a ``SETOF`` result as an array of rows.

As PostgREST does, every request runs in one transaction as the role of its API key (``apikey``
header): the service key runs as ``service_role`` (which bypasses RLS), the anon key as ``anon``;
``request.jwt.claims`` is set. Errors are ``{"code", "message", "details", "hint"}`` with PostgREST's
statuses (409 unique/foreign-key violation, 400 bad input, 403 RLS/privilege, 404 unknown
table/function, 401 bad key). Values are always bound as parameters and names quoted with
``psycopg.sql``. :meth:`FakePostgrest.drop_responses` applies a request but drops its response, to
test what a client does when a write's answer is lost.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

__all__ = ["FakePostgrest", "PostgrestError"]

_COMPARISONS = {
    "eq": "=",
    "neq": "<>",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
    "like": "LIKE",
    "ilike": "ILIKE",
}
_IS_VALUES = {"null": "NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}
_RESERVED = {"select", "order", "limit", "offset", "columns", "on_conflict"}
_STATUS_BY_SQLSTATE = {
    "23505": 409,
    "23503": 409,
    "23502": 400,
    "23514": 400,
    "22P02": 400,
    "22023": 400,
    "22007": 400,
    "22008": 400,
    "42703": 400,
    "P0001": 400,
    "42501": 403,
    "42883": 404,
    "42P01": 404,
}


class PostgrestError(Exception):
    """An error answer: HTTP status and PostgREST's JSON error body."""

    def __init__(
        self, status: int, code: str, message: str, details: str | None = None, hint: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message, "details": details, "hint": hint}
        #: A gateway's HTML page sent instead of the JSON body, when set.
        self.page: str | None = None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any

    def prefer(self) -> dict[str, str]:
        prefs: dict[str, str] = {}
        for part in self.headers.get("prefer", "").split(","):
            key, _, value = part.strip().partition("=")
            if key:
                prefs[key] = value
        return prefs


def _split_list(text: str) -> list[str]:
    """``(a,"b,c",d)`` → ``["a", "b,c", "d"]`` (PostgREST's ``in`` list syntax)."""
    if not (text.startswith("(") and text.endswith(")")):
        raise PostgrestError(400, "PGRST100", f'"failed to parse filter (in.{text})"')
    items: list[str] = []
    current, quoted, escaped, seen = "", False, False, False
    for char in text[1:-1]:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
            seen = True
        elif char == "," and not quoted:
            items.append(current)
            current, seen = "", False
        else:
            current += char
    if current or seen or items:
        items.append(current)
    return items


class FakePostgrest:
    """The server; use as a context manager. ``url`` is the Supabase project URL to give supabase-py."""

    def __init__(
        self,
        database_url: str,
        *,
        service_key: str,
        anon_key: str | None = None,
        max_connections: int = 16,
    ) -> None:
        self.service_key = service_key
        self.anon_key = anon_key
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._drops: list[tuple[str, str, int]] = []
        self._failures: list[PostgrestError] = []
        self._columns: dict[str, dict[str, str]] = {}
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            database_url,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=30,
            kwargs={"autocommit": True},
            configure=_configure,
            name="fake-postgrest",
        )
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-postgrest",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._pool.open(wait=True, timeout=30)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._pool.close(timeout=5)

    def drop_responses(self, method: str, path_suffix: str, count: int = 1) -> None:
        """Apply the next ``count`` matching requests but close the connection instead of answering."""
        with self._lock:
            self._drops.append((method, path_suffix, count))

    def fail_requests(self, status: int, count: int = 1, *, gateway: bool = False) -> None:
        """Answer the next ``count`` requests with ``status`` without applying them (0 clears): PostgREST's
        JSON error for a database it cannot reach, or, with ``gateway``, an HTML page as a proxy sends."""
        error = PostgrestError(status, "PGRST000", "Could not connect with the database")
        if gateway:
            error.page = f"<html><body><h1>{status} Gateway error</h1></body></html>"
        with self._lock:
            self._failures = [error] * count

    def _should_drop(self, method: str, path: str) -> bool:
        with self._lock:
            for index, (want_method, suffix, count) in enumerate(self._drops):
                if want_method == method and path.endswith(suffix) and count > 0:
                    self._drops[index] = (want_method, suffix, count - 1)
                    return True
        return False

    # --- the request pipeline ---------------------------------------------------------------------

    def handle(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append((request.method, request.path))
            if self._failures:
                raise self._failures.pop()
        role = self._role(request.headers)
        parts = [part for part in request.path.split("/") if part]
        if parts[:2] != ["rest", "v1"] or len(parts) < 3:
            raise PostgrestError(404, "PGRST125", f"Invalid path specified in request URL: {request.path}")
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps({"role": role}),))
            if parts[2] == "rpc" and len(parts) == 4:
                if request.method != "POST":
                    raise PostgrestError(405, "PGRST101", "only POST is implemented for functions here")
                return self._rpc(conn, parts[3], request)
            if len(parts) != 3:
                raise PostgrestError(
                    404, "PGRST125", f"Invalid path specified in request URL: {request.path}"
                )
            table = parts[2]
            if request.method == "GET":
                return self._select(conn, table, request)
            if request.method == "POST":
                return self._insert(conn, table, request)
            if request.method == "PATCH":
                return self._update(conn, table, request)
            if request.method == "DELETE":
                return self._delete(conn, table, request)
        raise PostgrestError(405, "PGRST117", f"Unsupported HTTP method: {request.method}")

    def _role(self, headers: dict[str, str]) -> str:
        key = headers.get("apikey", "")
        bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if key == self.service_key and bearer in ("", self.service_key):
            return "service_role"
        if self.anon_key is not None and key == self.anon_key:
            return "anon"
        raise PostgrestError(401, "PGRST301", "Invalid API key", hint="Double check your Supabase key.")

    def _table_columns(self, conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
        with self._lock:
            cached = self._columns.get(table)
        if cached is not None:
            return cached
        rows = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relname = %s AND c.relkind IN ('r', 'v', 'p')"
            " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (table,),
        ).fetchall()
        if not rows:
            raise PostgrestError(
                404,
                "PGRST205",
                f"Could not find the table 'public.{table}' in the schema cache",
            )
        columns = {name: type_name for name, type_name in rows}
        with self._lock:
            self._columns[table] = columns
        return columns

    @staticmethod
    def _column(table: str, columns: dict[str, str], name: str) -> sql.Identifier:
        if name not in columns:
            raise PostgrestError(400, "42703", f"column {table}.{name} does not exist")
        return sql.Identifier(table, name)

    def _where(
        self, table: str, columns: dict[str, str], request: Request, params: list[Any]
    ) -> sql.Composable:
        conditions: list[sql.Composable] = []
        for key, raw in request.query:
            if key in _RESERVED:
                continue
            column = self._column(table, columns, key)
            type_name = sql.SQL(columns[key])
            negate = raw.startswith("not.")
            operator, _, operand = (raw[4:] if negate else raw).partition(".")
            if operator in _COMPARISONS:
                params.append(operand)
                condition: sql.Composable = sql.SQL("{} {} CAST(CAST(%s AS text) AS {})").format(
                    column, sql.SQL(_COMPARISONS[operator]), type_name
                )
            elif operator == "in":
                params.append(_split_list(operand))
                condition = sql.SQL("{} = ANY(CAST(CAST(%s AS text[]) AS {}[]))").format(column, type_name)
            elif operator == "is" and operand.lower() in _IS_VALUES:
                condition = sql.SQL("{} IS {}").format(column, sql.SQL(_IS_VALUES[operand.lower()]))
            else:
                raise PostgrestError(400, "PGRST100", f'"failed to parse filter ({raw})" (line 1, column 1)')
            conditions.append(sql.SQL("NOT ({})").format(condition) if negate else condition)
        if not conditions:
            return sql.SQL("")
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions)

    def _select_list(
        self, table: str, columns: dict[str, str], request: Request, source: str
    ) -> sql.Composable:
        select = dict(request.query).get("select", "*")
        items: list[sql.Composable] = []
        for item in (part.strip() for part in select.split(",")):
            if item == "*":
                items.append(sql.SQL("{}.*").format(sql.Identifier(source)))
                continue
            alias, _, name = item.rpartition(":") if ":" in item and "::" not in item else ("", "", item)
            if "(" in name or "::" in name:
                raise PostgrestError(400, "PGRST100", f"unsupported select item {item!r} in this test double")
            self._column(table, columns, name)
            items.append(
                sql.SQL("{} AS {}").format(sql.Identifier(source, name), sql.Identifier(alias or name))
            )
        return sql.SQL(", ").join(items)

    def _order(self, table: str, columns: dict[str, str], request: Request) -> sql.Composable:
        order = dict(request.query).get("order")
        if not order:
            return sql.SQL("")
        terms: list[sql.Composable] = []
        for term in order.split(","):
            name, *modifiers = term.split(".")
            parts: list[sql.Composable] = [self._column(table, columns, name)]
            for modifier in modifiers:
                words = {"asc": "ASC", "desc": "DESC", "nullsfirst": "NULLS FIRST", "nullslast": "NULLS LAST"}
                if modifier not in words:
                    raise PostgrestError(400, "PGRST100", f'"failed to parse order ({order})"')
                parts.append(sql.SQL(words[modifier]))
            terms.append(sql.SQL(" ").join(parts))
        return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)

    @staticmethod
    def _int_param(request: Request, name: str) -> int | None:
        value = dict(request.query).get(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise PostgrestError(400, "PGRST100", f'"failed to parse {name} ({value})"') from None

    def _respond_rows(
        self,
        conn: psycopg.Connection[Any],
        query: sql.Composed,
        params: list[Any],
        request: Request,
        status: int,
    ) -> tuple[int, dict[str, str], bytes]:
        row = conn.execute(query, params).fetchone()
        rows = json.loads(row[0]) if row and row[0] is not None else []
        headers = {"content-type": "application/json; charset=utf-8"}
        if request.prefer().get("return") == "minimal" and request.method != "GET":
            return (204 if status == 200 else status), headers, b""
        if request.headers.get("accept", "").startswith("application/vnd.pgrst.object+json"):
            if len(rows) != 1:
                raise PostgrestError(
                    406,
                    "PGRST116",
                    "JSON object requested, multiple (or no) rows returned",
                    details=f"The result contains {len(rows)} rows",
                )
            return status, headers, json.dumps(rows[0]).encode()
        return status, headers, json.dumps(rows).encode()

    def _select(
        self, conn: psycopg.Connection[Any], table: str, request: Request
    ) -> tuple[int, dict[str, str], bytes]:
        columns = self._table_columns(conn, table)
        params: list[Any] = []
        where = self._where(table, columns, request, params)
        limit, offset = self._int_param(request, "limit"), self._int_param(request, "offset") or 0
        query = sql.SQL(
            "SELECT json_agg(r)::text FROM"
            " (SELECT {select} FROM {table}{where}{order}{limit} OFFSET {offset}) r"
        ).format(
            select=self._select_list(table, columns, request, table),
            table=sql.Identifier(table),
            where=where,
            order=self._order(table, columns, request),
            limit=sql.SQL(" LIMIT {}").format(sql.Literal(limit)) if limit is not None else sql.SQL(""),
            offset=sql.Literal(offset),
        )
        status, headers, body = self._respond_rows(conn, query, list(params), request, 200)
        shown = len(json.loads(body)) if body.startswith(b"[") else 1
        total = "*"
        if request.prefer().get("count") == "exact":
            count_query = sql.SQL("SELECT count(*) FROM {}{}").format(sql.Identifier(table), where)
            total = str(conn.execute(count_query, params).fetchone()[0])  # type: ignore[index]
        headers["content-range"] = f"{offset}-{offset + shown - 1}/{total}" if shown else f"*/{total}"
        return status, headers, body

    def _insert(
        self, conn: psycopg.Connection[Any], table: str, request: Request
    ) -> tuple[int, dict[str, str], bytes]:
        columns = self._table_columns(conn, table)
        body = request.body
        rows = body if isinstance(body, list) else [body]
        if not rows or not all(isinstance(row, dict) for row in rows):
            raise PostgrestError(400, "PGRST102", "Empty or invalid json")
        listed = dict(request.query).get("columns")
        names = (
            [name.strip('"') for name in listed.split(",")]
            if listed
            else list(dict.fromkeys(k for r in rows for k in r))
        )
        targets = [sql.Identifier(name) for name in names if self._column(table, columns, name)]
        query = sql.SQL(
            "WITH r AS (INSERT INTO {table} ({targets})"
            " SELECT {targets} FROM jsonb_populate_recordset(NULL::{table}, %s)"
            " RETURNING *) SELECT json_agg(s)::text FROM (SELECT {select} FROM r) s"
        ).format(
            table=sql.Identifier(table),
            targets=sql.SQL(", ").join(targets),
            select=self._select_list(table, columns, request, "r"),
        )
        return self._respond_rows(conn, query, [Jsonb(rows)], request, 201)

    def _update(
        self, conn: psycopg.Connection[Any], table: str, request: Request
    ) -> tuple[int, dict[str, str], bytes]:
        columns = self._table_columns(conn, table)
        if not isinstance(request.body, dict) or not request.body:
            raise PostgrestError(400, "PGRST102", "Empty or invalid json")
        params: list[Any] = [Jsonb(request.body)]
        assignments = [
            sql.SQL("{} = p.{}").format(sql.Identifier(name), sql.Identifier(name))
            for name in request.body
            if self._column(table, columns, name)
        ]
        where = self._where(table, columns, request, params)
        query = sql.SQL(
            "WITH r AS (UPDATE {table} SET {assignments}"
            " FROM jsonb_populate_record(NULL::{table}, %s) p{where}"
            " RETURNING {table}.*) SELECT json_agg(s)::text FROM (SELECT {select} FROM r) s"
        ).format(
            table=sql.Identifier(table),
            assignments=sql.SQL(", ").join(assignments),
            where=where,
            select=self._select_list(table, columns, request, "r"),
        )
        return self._respond_rows(conn, query, params, request, 200)

    def _delete(
        self, conn: psycopg.Connection[Any], table: str, request: Request
    ) -> tuple[int, dict[str, str], bytes]:
        columns = self._table_columns(conn, table)
        params: list[Any] = []
        where = self._where(table, columns, request, params)
        query = sql.SQL(
            "WITH r AS (DELETE FROM {table}{where} RETURNING *)"
            " SELECT json_agg(s)::text FROM (SELECT {select} FROM r) s"
        ).format(
            table=sql.Identifier(table), where=where, select=self._select_list(table, columns, request, "r")
        )
        return self._respond_rows(conn, query, params, request, 200)

    def _rpc(
        self, conn: psycopg.Connection[Any], function: str, request: Request
    ) -> tuple[int, dict[str, str], bytes]:
        args = request.body if isinstance(request.body, dict) else {}
        candidates = conn.execute(
            "SELECT p.proretset,"
            # Only the input arguments' names: a RETURNS TABLE function lists its columns there too.
            " ARRAY(SELECT n FROM unnest(COALESCE(p.proargnames, '{}'), p.proargmodes) AS a(n, m)"
            " WHERE m IS NULL OR m IN ('i', 'b', 'v')),"
            " ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t), p.pronargdefaults"
            " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'public' AND p.proname = %s",
            (function,),
        ).fetchall()
        for candidate_returns_set, names, types, defaults in candidates:
            signature = dict(zip(names, types, strict=False))
            required = set(names[: len(names) - defaults])
            if set(args) <= set(signature) and required <= set(args):
                returns_set = candidate_returns_set
                break
        else:
            raise PostgrestError(
                404,
                "PGRST202",
                f"Could not find the function public.{function}({', '.join(sorted(args))})"
                " in the schema cache",
            )
        params: list[Any] = []
        named: list[sql.Composable] = []
        for name, value in args.items():
            type_name = signature[name]
            if type_name in ("json", "jsonb"):
                params.append(Jsonb(value) if value is not None else None)
                cast = sql.SQL("CAST(%s AS {})").format(sql.SQL(type_name))
            elif type_name.endswith("[]"):
                params.append([None if v is None else str(v) for v in value] if value is not None else None)
                cast = sql.SQL("CAST(CAST(%s AS text[]) AS {})").format(sql.SQL(type_name))
            else:
                params.append(
                    None if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
                )
                cast = sql.SQL("CAST(CAST(%s AS text) AS {})").format(sql.SQL(type_name))
            named.append(sql.SQL("{} => {}").format(sql.Identifier(name), cast))
        call = sql.SQL("{}({})").format(sql.Identifier("public", function), sql.SQL(", ").join(named))
        if returns_set:
            query = sql.SQL("SELECT COALESCE(json_agg(x), '[]'::json)::text FROM {} AS x").format(call)
        else:
            query = sql.SQL("SELECT to_json({})::text").format(call)
        row = conn.execute(query, params).fetchone()
        body = row[0].encode() if row and row[0] is not None else b"null"
        return 200, {"content-type": "application/json; charset=utf-8"}, body

    # --- HTTP ---------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                headers = {key.lower(): value for key, value in self.headers.items()}
                try:
                    body = json.loads(raw) if raw else None
                    request = Request(
                        self.command,
                        split.path,
                        parse_qsl(split.query, keep_blank_values=True),
                        headers,
                        body,
                    )
                    status, reply_headers, payload = server.handle(request)
                except json.JSONDecodeError as exc:
                    status, reply_headers, payload = self._error(
                        PostgrestError(400, "PGRST102", f"Invalid JSON: {exc}")
                    )
                except PostgrestError as exc:
                    status, reply_headers, payload = self._error(exc)
                except psycopg.Error as exc:
                    status, reply_headers, payload = self._error(_from_database(exc))
                if server._should_drop(self.command, split.path):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                try:
                    self.send_response(status)
                    for key, value in reply_headers.items():
                        self.send_header(key, value)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            @staticmethod
            def _error(exc: PostgrestError) -> tuple[int, dict[str, str], bytes]:
                if exc.page is not None:
                    return exc.status, {"content-type": "text/html"}, exc.page.encode()
                return (
                    exc.status,
                    {"content-type": "application/json; charset=utf-8"},
                    json.dumps(exc.body).encode(),
                )

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TIME ZONE 'UTC'")


def _from_database(exc: psycopg.Error) -> PostgrestError:
    """PostgREST's answer to a database error: its SQLSTATE as ``code`` and the mapped HTTP status."""
    code = exc.sqlstate or "XX000"
    diag = exc.diag
    status = _STATUS_BY_SQLSTATE.get(code, 500 if code.startswith(("XX", "53", "58")) else 400)
    return PostgrestError(
        status, code, diag.message_primary or str(exc), diag.message_detail, diag.message_hint
    )


def iter_rpc_functions(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """Names of the ``agentq_*`` functions in ``public`` (for tests)."""
    for (name,) in conn.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND p.proname LIKE 'agentq%%' ORDER BY 1"
    ):
        yield name
