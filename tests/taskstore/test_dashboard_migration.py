"""Migration 0007_dashboard adds its own functions only, so it may land after a later migration."""

from __future__ import annotations

import re

import psycopg
import pytest

from taskstore.schema import MIGRATIONS, SQL_DIR
from taskstore.sql_store import signatures
from tests.services import temporary_database

DASHBOARD_FUNCTIONS = {
    "agentq_list_tasks",
    "agentq_overview",
    "agentq_disable_schedule",
    "agentq_enable_schedule",
    "agentq_fire_schedule_now",
}


def test_0007_defines_the_dashboards_functions_and_no_other() -> None:
    text = (SQL_DIR / "history" / "0007_dashboard_functions.sql").read_text(encoding="utf-8")

    defined = set(re.findall(r"CREATE OR REPLACE FUNCTION (agentq_\w+)", text))

    assert defined == DASHBOARD_FUNCTIONS
    assert defined <= set(signatures())  # still current, in functions.sql


@pytest.mark.integration
def test_a_database_that_applied_0008_before_0007_keeps_0008s_functions() -> None:
    # Given a database that went from 0006 to 0008 (a deployment of the approvals first)
    by_name = {migration.name: migration for migration in MIGRATIONS}
    order = [name for name in by_name if name != "0007_dashboard"] + ["0007_dashboard"]
    assert order.index("0008_approvals") < order.index("0007_dashboard")
    with temporary_database() as url, psycopg.connect(url, autocommit=True) as conn:
        # When 0007 is applied last
        for name in order:
            conn.execute(by_name[name].path().read_text(encoding="utf-8").encode())

        # Then 0008's version of a function both change survives, and the dashboard's functions work
        counts = conn.execute("SELECT agentq_queue_counts(now())").fetchone()
        listed = conn.execute("SELECT agentq_list_tasks(p_limit => 5)").fetchone()
        overview = conn.execute(
            "SELECT agentq_overview(now(), now() - interval '1 hour', date_trunc('day', now()),"
            " date_trunc('month', now()))"
        ).fetchone()
    assert counts is not None and "awaiting_approval" in counts[0]
    assert listed is not None and listed[0] == []
    assert overview is not None and overview[0]["counts"]["waiting"] == 0
