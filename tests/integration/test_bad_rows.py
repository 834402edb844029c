"""One bad row never stops a pass: the reconciler, the scheduler tick and ``agentq schedules`` handle
each task on its own (Postgres and Redis; the CLI in its own process)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from dramatiq.brokers.redis import RedisBroker

from actors.errors import UnknownAgentKind
from actors.schedules.tick import dispatch_due_schedules
from middleware import Reconciler
from middleware.reconciler import agent_queues
from middleware.redis_messages import task_ids_in_flight
from taskstore import Task, TaskStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import ROOT, command_env
from tests.harness import ORG, Harness, redis_harness

pytestmark = pytest.mark.integration

LIFECYCLE = "agentq.lifecycle"


@pytest.fixture
def app(postgres_store: PostgresTaskStore, redis_url: str) -> Iterator[Harness]:
    with redis_harness(postgres_store, redis_url) as harness:
        yield harness


def sql(url: str, statement: str, *params: object) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def set_kind(url: str, agent_id: str, kind: str) -> None:
    """The agent's kind changes, after its tasks were created, to one no actor runs here."""
    sql(url, "UPDATE ai_agents SET kind = %s WHERE id = %s", kind, agent_id)


def delete_agent(url: str, agent_id: str) -> None:
    """Remove an agent under its tasks (foreign keys off for this session, as a careless restore might)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM ai_agents WHERE id = %s", (agent_id,))


def in_flight(app: Harness) -> set[str]:
    broker = app.broker
    assert isinstance(broker, RedisBroker)
    return task_ids_in_flight(broker, set(agent_queues(broker).values()))


def task(app: Harness, task_id: str) -> Task:
    found = app.store.get_task(task_id)
    assert found is not None
    return found


def errors_naming(caplog: pytest.LogCaptureFixture, task_id: str) -> int:
    return sum(task_id in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def test_the_reconciler_fails_unrunnable_tasks_and_enqueues_the_others(
    app: Harness, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    astrologer, ghost = app.agent(), app.agent()
    bad_queued, bad_pending, orphan = app.task(astrologer), app.task(astrologer), app.task(ghost)
    good_queued, good_pending = [app.task(), app.task()], app.task()
    set_kind(postgres_url, astrologer, "no_such_kind")
    delete_agent(postgres_url, ghost)
    # Queued without a message (inserted straight into the table, or Redis lost it); the bad rows oldest.
    for age, task_id in enumerate([*good_queued, orphan, bad_queued]):
        sql(
            postgres_url,
            "UPDATE ai_agent_tasks SET status = 'queued', queued_at = now() - make_interval(mins => %s)"
            " WHERE id = %s",
            10 + age,
            task_id,
        )
    for age, task_id in enumerate([good_pending, bad_pending]):
        sql(
            postgres_url,
            "UPDATE ai_agent_tasks SET created_at = now() - make_interval(mins => %s) WHERE id = %s",
            10 + age,
            task_id,
        )
    reconciler = Reconciler(app.store, interval_ms=1000, pending_grace_ms=60_000)

    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        report = reconciler.reconcile(app.broker)
        again = reconciler.reconcile(app.broker)

    assert (report.enqueued_pending, report.resent_queued, report.failed_unrunnable) == (1, 2, 3)
    assert again.failed_unrunnable == 0
    assert {*good_queued, good_pending} <= in_flight(app)
    assert {bad_queued, bad_pending, orphan}.isdisjoint(in_flight(app))
    for task_id in (bad_queued, bad_pending):
        failed = task(app, task_id)
        assert failed.status == TaskStatus.FAILED and failed.error is not None
        assert task_id in failed.error and "agent kind 'no_such_kind' has no actor" in failed.error
    gone = task(app, orphan)
    assert (
        gone.status == TaskStatus.FAILED
        and gone.error == f"task {orphan} cannot run: its agent no longer exists"
    )
    for task_id in (bad_queued, bad_pending, orphan):
        assert app.store.get_runs(task_id) == [] and errors_naming(caplog, task_id) == 1


def test_the_scheduler_tick_fires_the_good_schedules_and_fails_or_disables_the_bad_ones(
    app: Harness, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    now = utcnow()
    astrologer, ghost = app.agent(), app.agent()
    bad_kind, orphan = app.task(astrologer, task_type="scheduled"), app.task(ghost, task_type="scheduled")
    bad_zone, bad_cron = app.task(task_type="scheduled"), app.task(task_type="scheduled")
    good = [app.task(task_type="scheduled") for _ in range(2)]
    for task_id in (bad_kind, orphan, bad_zone, bad_cron, *good):
        app.queue.add_scheduled_task(task_id, "* * * * *")
    set_kind(postgres_url, astrologer, "no_such_kind")
    delete_agent(postgres_url, ghost)
    sql(
        postgres_url,
        "UPDATE ai_agent_tasks SET schedule_timezone = 'Mars/Olympus_Mons' WHERE id = %s",
        bad_zone,
    )
    sql(postgres_url, "UPDATE ai_agent_tasks SET schedule_cron = '61 * * * *' WHERE id = %s", bad_cron)
    # Every schedule due; the bad ones first.
    for age, task_id in enumerate([*good, bad_cron, bad_zone, orphan, bad_kind]):
        sql(
            postgres_url,
            "UPDATE ai_agent_tasks SET next_run_at = %s WHERE id = %s",
            now - timedelta(minutes=age + 1),
            task_id,
        )

    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        report = dispatch_due_schedules(app.store, app.broker, now=now + timedelta(seconds=1), batch_size=2)

    assert (report.started, report.failed, report.disabled) == (2, 2, 2)
    assert set(good) <= in_flight(app) and all(task(app, t).status == TaskStatus.QUEUED for t in good)
    assert {bad_kind, orphan, bad_zone, bad_cron}.isdisjoint(in_flight(app))
    kind_error, orphan_error = task(app, bad_kind).error, task(app, orphan).error
    assert kind_error is not None and bad_kind in kind_error and "'no_such_kind' has no actor" in kind_error
    assert orphan_error == f"task {orphan} cannot run: its agent no longer exists"
    assert task(app, bad_kind).schedule_cron == "* * * * *"  # fires (and fails) again until fixed
    for task_id, value in ((bad_zone, "'Mars/Olympus_Mons'"), (bad_cron, "'61 * * * *'")):
        disabled = task(app, task_id)
        assert disabled.status == TaskStatus.FAILED and disabled.schedule_cron is None
        assert disabled.error is not None and task_id in disabled.error and value in disabled.error
    for task_id in (bad_kind, orphan, bad_zone, bad_cron):
        assert app.store.get_runs(task_id) == [] and errors_naming(caplog, task_id) == 1


def test_agentq_schedules_lists_every_row_and_reports_an_unusable_one(
    app: Harness, postgres_url: str, redis_url: str
) -> None:
    good, bad = app.task(task_type="scheduled"), app.task(task_type="scheduled")
    for task_id in (good, bad):
        app.queue.add_scheduled_task(task_id, "0 9 * * *", "Europe/Paris")
    sql(postgres_url, "UPDATE ai_agent_tasks SET schedule_timezone = 'Mars/Olympus_Mons' WHERE id = %s", bad)

    done = subprocess.run(
        [sys.executable, "-m", "actors.cli", "schedules"],
        cwd=ROOT,
        env=command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in json.loads(done.stdout)}
    assert rows[good]["next_run_local"].endswith(("+01:00", "+02:00")) and "error" not in rows[good]
    assert rows[bad]["next_run_local"] is None and rows[bad]["timezone"] == "Mars/Olympus_Mons"
    assert bad in rows[bad]["error"] and "'Mars/Olympus_Mons'" in rows[bad]["error"]
    assert [line for line in done.stderr.splitlines() if bad in line] == [f"agentq: {rows[bad]['error']}"]


def test_create_task_refuses_an_agent_kind_without_actor_and_inserts_nothing(
    app: Harness, postgres_url: str
) -> None:
    astrologer = app.agent(kind="astrology")

    with pytest.raises(UnknownAgentKind, match="agent kind 'astrology' has no actor"):
        app.queue.create_task(agent_id=astrologer, organization_id=ORG, title="Horoscope")
    with pytest.raises(UnknownAgentKind, match=r"tasks\[0\]: agent kind 'astrology'"):
        app.queue.create_tasks([{"agent_id": astrologer, "organization_id": ORG, "title": "Horoscope"}])

    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM ai_agent_tasks").fetchone() == (0,)


def test_a_huge_bad_time_zone_is_named_without_being_echoed_whole(app: Harness, postgres_url: str) -> None:
    task_id = app.task(task_type="scheduled")
    app.queue.add_scheduled_task(task_id, "* * * * *")
    huge = "Mars/" + "x" * 100_000
    sql(postgres_url, "UPDATE ai_agent_tasks SET schedule_timezone = %s WHERE id = %s", huge, task_id)

    report = dispatch_due_schedules(app.store, app.broker, now=utcnow() + timedelta(minutes=2))

    error = task(app, task_id).error
    assert report.disabled == 1 and error is not None
    assert task_id in error and "'Mars/xxx" in error and "(100005 characters)" in error and len(error) < 500
