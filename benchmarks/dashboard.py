"""The dashboard's task list on a big table: page latency per filter, first and deep pages.

    python -m benchmarks.dashboard [--rows 1000000] [--repeat 15]

Loads ``--rows`` tasks (50 organizations, 200 agents of four kinds, 30 days of history, realistic
statuses and titles; runs for the last week) into a fresh Postgres database with ``INSERT … SELECT``,
analyzes it, then times ``PostgresTaskStore.list_tasks`` (``agentq_list_tasks``, 50 rows a page) for
each filter of the dashboard: the first page, and a deep page (keyset cursor half-way through the
filter's rows). For each it prints the server time (``EXPLAIN ANALYZE`` of the function call), the
client round trip (median and worst of ``--repeat``), and the index the planner chose for the dynamic
query inside (from ``auto_explain``, which needs a superuser, as the local test server has). Also
times the overview. Target (issue #18): every page under 100 ms of server time at 1,000,000 rows.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.summary import Figure
from taskstore import TaskFilter, TaskKey, TaskStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.services import temporary_database

OUTPUT = Path(__file__).resolve().parent / "results" / "dashboard-latest.md"
PAGE = 50
TARGET_MS = 100.0
ORGS = 50
AGENTS_PER_ORG = 4

#: One INSERT … SELECT for every task: the n-th task's organization, agent, status, title and age are
#: functions of n, so the distribution is the same at every size (agents take runs of 100 tasks in turn,
#: so every agent has tasks of every status).
_LOAD_TASKS = """
INSERT INTO ai_agent_tasks (id, agent_id, organization_id, title, status, priority, attempts, error,
                            cost_usd, queued_at, started_at, completed_at, failed_at, run_at,
                            created_at, updated_at)
SELECT gen_random_uuid(), a.id, a.organization_id,
       CASE WHEN n %% 1000 = 7 THEN 'Escalation for ACME Corp #' || n
            WHEN n %% 3 = 0 THEN 'Invoice reconciliation ' || n
            WHEN n %% 3 = 1 THEN 'Weekly report for store ' || (n %% 977)
            ELSE 'Member retention check #' || n END,
       s.status, (n * 7) %% 11, CASE WHEN s.status IN ('completed', 'failed') THEN 1 ELSE 0 END,
       CASE WHEN s.status = 'failed' THEN 'provider returned 500 (attempt ' || (n %% 3 + 1) || ')' END,
       CASE WHEN s.status IN ('completed', 'failed') THEN ((n %% 97) / 1000.0) ELSE 0 END,
       c.created_at, c.created_at,
       CASE WHEN s.status = 'completed' THEN c.created_at + interval '20 seconds' END,
       CASE WHEN s.status = 'failed' THEN c.created_at + interval '20 seconds' END,
       CASE WHEN s.status = 'queued' THEN c.created_at END,
       c.created_at, c.created_at
  FROM generate_series(1, %(rows)s) AS n
  CROSS JOIN LATERAL (SELECT now() - (interval '30 days') * (n::float8 / %(rows)s) AS created_at) c
  CROSS JOIN LATERAL (SELECT CASE WHEN n %% 100 < 80 THEN 'completed' WHEN n %% 100 < 85 THEN 'failed'
                                  WHEN n %% 100 < 90 THEN 'cancelled' WHEN n %% 100 < 94 THEN 'pending'
                                  WHEN n %% 100 < 99 THEN 'queued' ELSE 'running' END AS status) s
  JOIN agents a ON a.seq = (n / 100) %% %(agents)s
"""
#: One run per finished task of the last week (the overview's spend reads them).
_LOAD_RUNS = """
INSERT INTO ai_agent_task_runs (task_id, attempt, status, started_at, finished_at, cost_usd)
SELECT id, 1, status, created_at, COALESCE(completed_at, failed_at), cost_usd
  FROM ai_agent_tasks WHERE status IN ('completed', 'failed') AND created_at > now() - interval '7 days'
"""


def load(url: str, rows: int) -> dict[str, Any]:
    """Agents and ``rows`` tasks; returns handles the cases need (an agent, an organization)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TEMP TABLE agents AS SELECT seq, gen_random_uuid() AS id,"
            " ('00000000-0000-4000-8000-' || lpad(to_hex(seq / %(per)s), 12, '0'))::uuid AS organization_id,"
            " CASE WHEN seq = 199 THEN 'audit' WHEN seq %% 10 < 6 THEN 'general'"
            "      WHEN seq %% 10 < 9 THEN 'financial_report' ELSE 'member_retention' END AS kind"
            " FROM generate_series(0, %(agents)s - 1) AS seq",
            {"per": AGENTS_PER_ORG, "agents": ORGS * AGENTS_PER_ORG},
        )
        conn.execute(
            "INSERT INTO ai_agents (id, organization_id, name, kind, provider, model)"
            " SELECT id, organization_id, 'Agent ' || seq, kind, 'scripted', 'scripted-1' FROM agents"
        )
        conn.execute(_LOAD_TASKS, {"rows": rows, "agents": ORGS * AGENTS_PER_ORG})
        conn.execute(_LOAD_RUNS)
        conn.execute("VACUUM ANALYZE ai_agents")
        conn.execute("VACUUM ANALYZE ai_agent_tasks")
        conn.execute("VACUUM ANALYZE ai_agent_task_runs")
        agent_id, org = conn.execute("SELECT id, organization_id FROM agents WHERE seq = 7").fetchone()  # type: ignore[misc]
        audit_share = conn.execute(
            "SELECT round(100.0 * count(*) / %s, 2) FROM ai_agent_tasks t"
            " JOIN ai_agents a ON a.id = t.agent_id WHERE a.kind = 'audit'",
            (rows,),
        ).fetchone()
    return {"agent_id": str(agent_id), "organization_id": str(org), "audit_share": audit_share}


@dataclass(frozen=True)
class Case:
    name: str
    task_filter: TaskFilter


def cases(handles: dict[str, Any], now: datetime) -> list[Case]:
    """Every filter of the dashboard's task list, alone and in the combinations operators use."""
    from datetime import timedelta

    day = now - timedelta(days=10)
    org, agent = handles["organization_id"], handles["agent_id"]
    return [
        Case("no filter", TaskFilter()),
        Case("status = failed (5 %)", TaskFilter(status=TaskStatus.FAILED)),
        Case("status = running (1 %)", TaskFilter(status=TaskStatus.RUNNING)),
        Case("agent (0.5 %)", TaskFilter(agent_id=agent)),
        Case("organization (2 %)", TaskFilter(organization_id=org)),
        Case("kind = financial_report (~28 %)", TaskFilter(kind="financial_report")),
        Case(f"kind = audit ({handles['audit_share'][0]} %, one agent)", TaskFilter(kind="audit")),
        Case("created in one day", TaskFilter(created_from=day, created_to=day + timedelta(days=1))),
        Case("title contains 'invoice' (33 %)", TaskFilter(title="invoice")),
        Case("title contains 'acme' (0.1 %)", TaskFilter(title="acme")),
        Case("organization + status = failed", TaskFilter(organization_id=org, status=TaskStatus.FAILED)),
        Case("kind + status = failed", TaskFilter(kind="financial_report", status=TaskStatus.FAILED)),
        Case(
            "organization + one day",
            TaskFilter(organization_id=org, created_from=day, created_to=day + timedelta(days=1)),
        ),
    ]


@dataclass(frozen=True)
class Timing:
    case: str
    page: str
    rows: int
    server_ms: float
    median_ms: float
    worst_ms: float
    indexes: str


def _deep_key(store: PostgresTaskStore, task_filter: TaskFilter) -> TaskKey | None:
    """The key half-way through the filter's rows (found by paging with big pages: setup only)."""
    keys: list[TaskKey] = []
    after: TaskKey | None = None
    while page := store.list_tasks(task_filter, limit=1000, after=after):
        keys.append(page[-1].key)
        after = page[-1].key
        if len(keys) >= 500:  # 500,000 rows in: deep enough
            break
    return keys[(len(keys) - 1) // 2] if len(keys) > 1 else None


def _call_params(task_filter: TaskFilter, after: TaskKey | None) -> dict[str, Any]:
    """``agentq_list_tasks``'s arguments, as the store sends them."""
    captured: dict[str, Any] = {}

    class Capture(PostgresTaskStore):
        def _call(self, function: str, params: dict[str, Any], applied: Any = None) -> Any:
            captured.update(params)
            return []

    Capture("postgresql://unused").list_tasks(task_filter, limit=PAGE, after=after)
    return captured


def measure(url: str, store: PostgresTaskStore, case: Case, repeat: int) -> list[Timing]:
    timings = []
    deep = _deep_key(store, case.task_filter)
    for page, after in (("first", None), ("deep", deep)):
        if page == "deep" and after is None:
            continue

        def call(after: TaskKey | None = after) -> list[Any]:
            return store.list_tasks(case.task_filter, limit=PAGE, after=after)

        rows = len(call())
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            call()
            samples.append((time.perf_counter() - start) * 1000)
        server_ms, indexes = _explain(url, _call_params(case.task_filter, after))
        timings.append(
            Timing(case.name, page, rows, server_ms, statistics.median(samples), max(samples), indexes)
        )
    return timings


def _explain(url: str, params: dict[str, Any]) -> tuple[float, str]:
    """Server time of one call (best of three ``EXPLAIN ANALYZE``) and the indexes its inner query used."""
    from taskstore.postgres import _call_query

    query = _call_query("agentq_list_tasks", tuple(params))
    notices: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        conn.execute("SET auto_explain.log_level = 'notice'")
        conn.execute("SET client_min_messages = 'notice'")
        conn.execute("SET TIME ZONE 'UTC'")
        best = float("inf")
        for _ in range(3):
            notices.clear()
            plan = conn.execute(b"EXPLAIN (ANALYZE, FORMAT TEXT) " + query.encode(), params).fetchall()
            text = "\n".join(row[0] for row in plan)
            match = re.search(r"Execution Time: ([\d.]+) ms", text)
            best = min(best, float(match[1]) if match else float("nan"))
    inner = "\n".join(notice for notice in notices if "ai_agent_tasks t" in notice or "Index" in notice)
    scans = r"(?:Index (?:Only )?Scan(?: Backward)? using|Bitmap Index Scan on) (\w+)"
    used = sorted(set(re.findall(scans, inner)))
    return best, ", ".join(used) or ("seq scan" if "Seq Scan on ai_agent_tasks" in inner else "?")


def overview_timings(url: str, store: PostgresTaskStore, org: str, repeat: int) -> list[tuple[str, float]]:
    """The overview's round trip, of everyone and of one organization: first with every task live, then
    once retention (``cleanup_jobs``' default policy) has archived the finished tasks it would."""
    results = []
    for state in ("every task live", "after retention"):
        if state == "after retention":
            with psycopg.connect(url, autocommit=True) as conn:  # no statement timeout: a big first cleanup
                conn.execute(
                    "SELECT agentq_cleanup(now(), now() - interval '1 day', 1000,"
                    " now() - interval '7 days', 5000)"
                )
                conn.execute("VACUUM ANALYZE ai_agent_tasks")
        for scope, organization_id in (("all organizations", None), ("one organization", org)):
            samples = []
            for _ in range(repeat):
                start = time.perf_counter()
                store.overview(now=utcnow(), organization_id=organization_id)
                samples.append((time.perf_counter() - start) * 1000)
            results.append((f"overview, {scope}, {state}", statistics.median(samples)))
    return results


@dataclass(frozen=True)
class Result:
    rows: int
    load_s: float
    timings: list[Timing]
    overview: list[tuple[str, float]]


def run(rows: int, repeat: int) -> Result:
    with temporary_database() as url:
        store = PostgresTaskStore(url, max_size=2, group_commit=False)
        store.migrate()
        start = time.perf_counter()
        handles = load(url, rows)
        load_s = time.perf_counter() - start
        timings = []
        for case in cases(handles, utcnow()):
            timings.extend(measure(url, store, case, repeat))
        overview = overview_timings(url, store, handles["organization_id"], max(3, repeat // 3))
        store.close()
    return Result(rows, load_s, timings, overview)


def render(result: Result) -> str:
    lines = [
        f"# Dashboard task list: {result.rows:,} tasks in Postgres",
        "",
        f"Loaded in {result.load_s:.0f} s. Pages of {PAGE}; server time = best `EXPLAIN ANALYZE` of the"
        " `agentq_list_tasks` call; round trip = `PostgresTaskStore.list_tasks` from Python"
        " (median / worst).",
        "",
        "| filter | page | rows | server ms | round trip ms (median / worst) | index used |",
        "|---|---|---:|---:|---:|---|",
    ]
    for t in result.timings:
        lines.append(
            f"| {t.case} | {t.page} | {t.rows} | {t.server_ms:.2f} | {t.median_ms:.2f} / {t.worst_ms:.2f}"
            f" | {t.indexes} |"
        )
    lines += ["", "| overview (50,000 tasks queued) | round trip ms (median) |", "|---|---:|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in result.overview]
    worst = max(t.server_ms for t in result.timings)
    lines += ["", f"Slowest page: {worst:.2f} ms of server time (target < {TARGET_MS:.0f} ms)."]
    return "\n".join(lines) + "\n"


def figures(result: Result) -> list[Figure]:
    worst = max(result.timings, key=lambda t: t.server_ms)
    first = next(t for t in result.timings if t.case == "no filter" and t.page == "first")
    return [
        Figure(
            "dashboard task list",
            f"{result.rows:,} tasks, {len(result.timings)} pages (13 filters, first and deep)",
            f"first page {first.server_ms:.1f} ms; slowest {worst.server_ms:.1f} ms"
            f" ({worst.case}, {worst.page})",
            f"overview {result.overview[0][1]:.0f} ms; after retention {result.overview[2][1]:.0f} ms",
            f"< {TARGET_MS:.0f} ms server time",
            worst.server_ms < TARGET_MS,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    result = run(args.rows, args.repeat)
    report = render(result)
    OUTPUT.write_text(report, encoding="utf-8")
    print(report)
    return 0 if max(t.server_ms for t in result.timings) < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
