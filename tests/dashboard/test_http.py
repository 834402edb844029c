"""Every route of the dashboard over HTTP, on SQLite and on Postgres with the real Redis and a real worker."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from dashboard.access import Access
from dashboard.app import create_app
from dashboard.extensions import Extensions
from taskstore import TaskStatus, TaskStore, utcnow
from tests.dashboard.conftest import FAILS, Seeded, csrf_of, dashboard_of, run_tasks
from tests.harness import ORG, OTHER_ORG, Harness, redis_harness, wait_until

pytestmark = pytest.mark.integration

PAGES = ["/", "/partials/overview", "/tasks", "/dead-letters", "/schedules", "/workers", "/partials/workers"]


def test_every_page_renders(open_client: TestClient, seeded: Seeded) -> None:
    for path in [
        *PAGES,
        f"/tasks/{seeded.completed}",
        f"/tasks/{seeded.failed}",
        "/bulk/retry",
        "/bulk/cancel",
    ]:
        response = open_client.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
        assert response.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert (
            response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"
        )
    assert open_client.get("/login", follow_redirects=False).status_code == 303  # nothing to log in to


def test_the_overview_counts_what_the_store_holds(
    open_client: TestClient, seeded: Seeded, app: Harness
) -> None:
    stats = open_client.get("/api/stats").json()

    assert stats["paused"] is False
    assert stats["counts"] == {"completed": 1, "failed": 1, "pending": 1, "waiting": 0, "delayed": 0}
    assert (stats["last_hour"]["completed"], stats["last_hour"]["failed"]) == (1, 1)
    assert stats["last_hour"]["failure_rate"] == 0.5
    assert sum(minute["completed"] for minute in stats["last_hour"]["per_minute"]) == 1
    page = open_client.get("/").text
    assert 'data-count="completed"><span class="count">1</span>' in page
    assert 'data-count="failed"><span class="count">1</span>' in page
    assert "50.0 %" in page


def test_the_task_list_filters_and_pages_by_cursor(open_client: TestClient, app: Harness) -> None:
    agent = app.agent(kind="general")
    other = app.agent(organization_id=OTHER_ORG, kind="crashing")
    created = [app.task(agent, title=f"Invoice {index}") for index in range(5)]
    foreign = app.task(other, organization_id=OTHER_ORG, title="Foreign audit")

    first = open_client.get("/api/tasks", params={"limit": 2}).json()
    second = open_client.get("/api/tasks", params={"limit": 2, "after": first["older"]}).json()
    third = open_client.get("/api/tasks", params={"limit": 2, "after": second["older"]}).json()
    back = open_client.get("/api/tasks", params={"limit": 2, "before": third["newer"]}).json()

    listed = [item["id"] for page in (first, second, third) for item in page["items"]]
    assert sorted(listed) == sorted([*created, foreign]) and len(listed) == 6
    assert first["newer"] is None and third["older"] is None
    assert [item["id"] for item in back["items"]] == [item["id"] for item in second["items"]]

    def ids(**params: str) -> set[str]:
        return {item["id"] for item in open_client.get("/api/tasks", params=params).json()["items"]}

    assert ids(organization=OTHER_ORG) == {foreign}
    assert ids(kind="crashing") == {foreign} and ids(agent=agent) == set(created)
    assert ids(title="invoice 3") == {created[3]} and ids(status="pending") == {*created, foreign}
    assert ids(status="failed") == set()
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    assert ids(**{"from": later}) == set() and ids(to=later) == {*created, foreign}
    page = open_client.get("/tasks", params={"limit": 2, "title": "Invoice"}).text
    assert 'id="page-older"' in page and "title=Invoice" in page and 'id="page-newer"' not in page


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "bogus"}, "'status': 'bogus'"),
        ({"agent": "not-a-uuid"}, "'agent': 'not-a-uuid'"),
        ({"organization": "acme"}, "'organization': 'acme'"),
        ({"from": "yesterday"}, "'from': 'yesterday'"),
        ({"limit": "0"}, "'limit': '0'"),
        ({"limit": "9999"}, "'limit': '9999'"),
        ({"after": "bm90IGEgY3Vyc29y"}, "'after'"),
        ({"kind": "k" * 201}, "'kind'"),
    ],
)
def test_malformed_filters_are_400_naming_the_parameter(
    open_client: TestClient, params: dict[str, str], named: str
) -> None:
    response = open_client.get("/api/tasks", params=params)

    assert response.status_code == 400
    assert named in response.json()["error"]
    assert open_client.get("/tasks", params=params).status_code == 400


def test_unknown_and_malformed_ids(open_client: TestClient, app: Harness) -> None:
    missing = "00000000-0000-4000-8000-000000000000"

    assert open_client.get(f"/api/tasks/{missing}").status_code == 404
    assert missing in open_client.get(f"/api/tasks/{missing}").json()["error"]
    assert open_client.get(f"/tasks/{missing}").status_code == 404
    assert "'nope' is not a UUID" in open_client.get("/api/tasks/nope").json()["error"]
    assert open_client.get("/tasks/nope").status_code == 400
    assert open_client.get("/no-such-page").status_code == 404
    assert open_client.get("/api/no-such-route").json()["status"] == 404
    token = csrf_of(open_client)
    response = open_client.post(f"/api/tasks/{missing}/explode", headers={"X-CSRF-Token": token})
    assert response.status_code == 404 and "there are retry, cancel" in response.json()["error"]


def test_the_task_page_shows_input_result_conversation_steps_and_attempts(
    open_client: TestClient, seeded: Seeded, app: Harness
) -> None:
    page = open_client.get(f"/tasks/{seeded.completed}").text

    assert "It is 42." in page  # the result and the model's answer
    assert "calculate" in page and "6*7" in page  # the tool call, its arguments
    assert 'id="steps"' in page and "llm" in page and "tool" in page  # the step ledger
    assert 'id="runs"' in page and "completed" in page
    job = open_client.get(f"/api/tasks/{seeded.completed}").json()
    assert job["task"]["result"] is not None and job["runs"][0]["transcript"]
    assert [step["kind"] for step in job["steps"]] == ["llm", "tool", "llm"]
    assert all(step["latency_ms"] is not None for step in job["steps"])
    failed = open_client.get(f"/tasks/{seeded.failed}").text
    assert "provider exploded" in failed and 'id="retry"' in failed


def test_a_run_links_to_its_trace(open_client: TestClient, seeded: Seeded, app: Harness) -> None:
    set_trace_id(app, seeded.completed, "4bf92f3577b34da6a3ce929d0e0e4736")

    page = open_client.get(f"/tasks/{seeded.completed}").text
    runs = open_client.get(f"/api/tasks/{seeded.completed}").json()["runs"]

    assert 'href="http://jaeger.local:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"' in page
    assert runs[0]["trace_url"] == "http://jaeger.local:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"


def set_trace_id(app: Harness, task_id: str, trace_id: str) -> None:
    """Give the task's runs a trace id (with no exporter configured, workers record none)."""
    store: object = app.store
    if hasattr(store, "path"):  # SQLite
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE ai_agent_task_runs SET trace_id = ? WHERE task_id = ?", (trace_id, task_id))
    else:
        import psycopg

        with psycopg.connect(store._conninfo, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute(
                "UPDATE ai_agent_task_runs SET trace_id = %s WHERE task_id = %s", (trace_id, task_id)
            )


def test_retry_and_cancel_through_the_api_and_the_pages(
    open_client: TestClient, seeded: Seeded, app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    token = csrf_of(open_client)

    with caplog.at_level(logging.INFO, logger="agentq.audit"):
        retried = open_client.post(f"/api/tasks/{seeded.failed}/retry", headers={"X-CSRF-Token": token})
        again = open_client.post(f"/api/tasks/{seeded.failed}/retry", headers={"X-CSRF-Token": token})
        finished = open_client.post(f"/api/tasks/{seeded.completed}/cancel", headers={"X-CSRF-Token": token})
        cancelled = open_client.post(
            f"/tasks/{seeded.pending}/cancel", data={"csrf_token": token}, follow_redirects=False
        )

    assert (retried.status_code, retried.json()) == (200, {"id": seeded.failed, "status": "queued"})
    assert again.status_code == 409 and "only failed jobs can be retried" in again.json()["error"]
    assert finished.status_code == 409 and "cannot become cancelled" in finished.json()["error"]
    assert cancelled.status_code == 303 and cancelled.headers["location"].endswith("notice=cancelled")
    assert app.store.get_task(seeded.pending).status == TaskStatus.CANCELLED  # type: ignore[union-attr]
    lines = [record.getMessage() for record in caplog.records]
    assert any(f"who=local role=admin org=* ip=testclient action=retry target=task:{seeded.failed} outcome=ok"
               in line for line in lines)  # fmt: skip
    assert any("action=retry" in line and 'outcome="refused:' in line for line in lines)
    assert any(f"action=cancel target=task:{seeded.pending} outcome=ok" in line for line in lines)
    assert all(" at=20" in line for line in lines)
    page = open_client.post(f"/tasks/{seeded.completed}/retry", data={"csrf_token": token})
    assert page.status_code == 409 and "only failed jobs can be retried" in page.text


def test_every_change_needs_the_csrf_token(open_client: TestClient, seeded: Seeded, app: Harness) -> None:
    changes = [
        f"/api/tasks/{seeded.failed}/retry",
        f"/api/tasks/{seeded.pending}/cancel",
        "/api/queue/pause",
        "/api/queue/resume",
        "/api/tasks/bulk/retry?confirm=true",
        f"/api/schedules/{seeded.pending}/run",
        f"/tasks/{seeded.failed}/retry",
        f"/tasks/{seeded.pending}/cancel",
        "/queue/pause",
        "/bulk/retry",
        f"/schedules/{seeded.pending}/disable",
        "/logout",
    ]
    for path in changes:
        for token in (None, "forged"):
            data = {"csrf_token": token} if token else {}
            response = open_client.post(path, data=data, headers={"X-CSRF-Token": token} if token else {})
            assert response.status_code == 403, f"{path} without a valid CSRF token: {response.status_code}"
    assert app.store.get_task(seeded.failed).status == TaskStatus.FAILED  # type: ignore[union-attr]
    assert not app.queue.is_paused()


def test_pause_and_resume(open_client: TestClient, app: Harness) -> None:
    token = csrf_of(open_client)
    waiting = app.task()
    app.queue.add_task(waiting)

    paused = open_client.post("/queue/pause", data={"csrf_token": token}, follow_redirects=False)
    stats = open_client.get("/api/stats").json()
    page = open_client.get("/").text
    resumed = open_client.post("/api/queue/resume", headers={"X-CSRF-Token": token})

    assert paused.status_code == 303 and paused.headers["location"] == "/?notice=paused"
    assert stats["paused"] is True and stats["counts"]["paused"] == 1 and stats["counts"]["waiting"] == 0
    assert 'id="resume"' in page and "paused" in page
    assert resumed.json() == {"paused": False} and not app.queue.is_paused()
    assert open_client.post("/api/queue/pause", headers={"X-CSRF-Token": token}).json() == {"paused": True}
    app.queue.resume_queue()


def test_schedules_list_disable_enable_and_run_now(open_client: TestClient, app: Harness) -> None:
    task_id = app.task(task_type="scheduled", title="Nightly digest")
    app.queue.add_scheduled_task(task_id, "0 3 * * *", "Europe/Paris")
    token = csrf_of(open_client)
    headers = {"X-CSRF-Token": token}

    listed = open_client.get("/api/schedules").json()["items"]
    page = open_client.get("/schedules").text
    disabled = open_client.post(f"/api/schedules/{task_id}/disable", headers=headers)
    twice = open_client.post(f"/api/schedules/{task_id}/disable", headers=headers)
    enabled = open_client.post(
        f"/schedules/{task_id}/enable", data={"csrf_token": token}, follow_redirects=False
    )
    run = open_client.post(f"/api/schedules/{task_id}/run", headers=headers)
    busy = open_client.post(f"/api/schedules/{task_id}/run", headers=headers)

    assert [(item["task_id"], item["cron"], item["timezone"], item["enabled"]) for item in listed] == [
        (task_id, "0 3 * * *", "Europe/Paris", True)
    ]
    assert "Nightly digest" in page and "CET" in page  # next run in its own zone
    assert disabled.json()["enabled"] is False and twice.status_code == 409
    assert enabled.status_code == 303 and open_client.get("/api/schedules").json()["items"][0]["enabled"]
    assert run.json()["status"] == "queued"
    assert busy.status_code == 409 and "its run is queued" in busy.json()["error"]
    adhoc = app.task()
    assert open_client.post(f"/api/schedules/{adhoc}/run", headers=headers).status_code == 409
    refused = open_client.post(f"/schedules/{adhoc}/enable", data={"csrf_token": token})
    assert refused.status_code == 409 and "has no schedule" in refused.text


def test_bulk_retry_needs_a_confirmation_then_retries_every_match(
    open_client: TestClient, app: Harness
) -> None:
    agent = app.agent()
    failed = [app.task(agent, title=f"Broken {index}", context={"script": FAILS}) for index in range(3)]
    other = app.task(
        app.agent(organization_id=OTHER_ORG), organization_id=OTHER_ORG, context={"script": FAILS}
    )
    run_tasks(app, [*failed, other], (TaskStatus.FAILED,))
    token = csrf_of(open_client)

    confirm = open_client.get("/bulk/retry", params={"organization": ORG})
    unconfirmed = open_client.post("/bulk/retry", data={"csrf_token": token, "organization": ORG})
    api_unconfirmed = open_client.post(
        "/api/tasks/bulk/retry", params={"organization": ORG}, headers={"X-CSRF-Token": token}
    )
    untouched = {app.store.get_task(task_id).status for task_id in failed}  # type: ignore[union-attr]
    done = open_client.post("/bulk/retry", data={"csrf_token": token, "organization": ORG, "confirm": "yes"})

    assert 'id="bulk-count">3<' in confirm.text
    assert unconfirmed.status_code == 400 and "Tick the confirmation box" in unconfirmed.text
    assert api_unconfirmed.status_code == 400 and "would touch 3 tasks" in api_unconfirmed.json()["error"]
    assert untouched == {TaskStatus.FAILED}
    assert "3 of 3 tasks retried" in done.text
    assert {app.store.get_task(task_id).status for task_id in failed} == {TaskStatus.QUEUED}  # type: ignore[union-attr]
    assert app.store.get_task(other).status == TaskStatus.FAILED  # type: ignore[union-attr]
    api = open_client.post(
        "/api/tasks/bulk/retry", params={"confirm": "true"}, headers={"X-CSRF-Token": token}
    )
    assert api.json()["matched"] == 1 and api.json()["done"] == 1
    wrong = open_client.post(
        "/api/tasks/bulk/cancel",
        params={"status": "completed", "confirm": "true"},
        headers={"X-CSRF-Token": token},
    )
    assert wrong.status_code == 400 and "not completed" in wrong.json()["error"]


def test_workers_show_host_pid_threads_and_running_tasks(open_client: TestClient, app: Harness) -> None:
    import os

    presence = next(m for m in app.broker.middleware if type(m).__name__ == "WorkerPresence")
    presence.refresh_s = 0.05  # type: ignore[attr-defined]
    slow = app.task(context={"script": [{"answer": "slow", "sleep_ms": 1500}]})

    with app.worker(threads=3):
        app.queue.add_task(slow)
        wait_until(
            lambda: any(slow in w["running"] for w in open_client.get("/api/workers").json()["items"]),
            timeout_s=15,
            what="the running task on the workers page",
        )
        (worker,) = open_client.get("/api/workers").json()["items"]
        page = open_client.get("/workers").text

    assert (worker["pid"], worker["threads"]) == (os.getpid(), 3) and "general" in worker["queues"]
    assert f'href="/tasks/{slow}"' in page and str(os.getpid()) in page


def test_the_event_stream_follows_a_task_to_its_end(
    open_client: TestClient, seeded: Seeded, app: Harness
) -> None:
    path = f"/api/tasks/{seeded.completed}/events"
    with open_client.stream("GET", path) as response:
        body = "".join(response.iter_text())
    ids = [line.removeprefix("id: ") for line in body.splitlines() if line.startswith("id: ")]
    with open_client.stream("GET", path, headers={"Last-Event-ID": ids[2]}) as rest:
        resumed = "".join(rest.iter_text())

    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("event: ") for line in body.splitlines() if line.startswith("event: ")]
    assert events[:2] == ["queued", "running"] and events[-2:] == ["completed", "end"]
    assert {"llm_completed", "tool_started", "tool_completed"} <= set(events)
    assert f"id: {ids[2]}\n" not in resumed and f"id: {ids[3]}\n" in resumed  # after the last id seen
    assert open_client.get("/api/tasks/00000000-0000-4000-8000-000000000000/events").status_code == 404
    bad = open_client.get(path, headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 400 and "event id 'yesterday'" in bad.json()["error"]


def test_without_redis_streams_the_events_follow_the_row(app: Harness, seeded: Seeded) -> None:
    client = TestClient(create_app(dashboard_of(app, redis=None), Access([])), base_url="http://127.0.0.1")

    with client.stream("GET", f"/api/tasks/{seeded.failed}/events") as response:
        body = "".join(response.iter_text())

    assert "event: run" in body and "event: status" in body and "event: end" in body
    assert '"status": "failed"' in body and "provider exploded" in body


def test_health_reports_the_store_and_redis(open_client: TestClient) -> None:
    assert open_client.get("/api/health").json() == {"status": "ok", "store": "ok", "redis": "ok"}


def test_extension_pages_and_panels_slot_in(app: Harness, seeded: Seeded) -> None:
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response

    from dashboard.extensions import ExtraPage, TaskPanel

    async def limits(request: Request) -> Response:
        return HTMLResponse("<p>limits</p>")

    extensions = Extensions(
        task_panels=[
            TaskPanel("Approval", lambda job: {"title": job.task.title}, source="<b>{{ title }}</b>")
        ],
        pages=[ExtraPage("/limits", "Provider limits", limits)],
    )
    client = TestClient(
        create_app(dashboard_of(app, extensions=extensions), Access([])), base_url="http://127.0.0.1"
    )

    page = client.get(f"/tasks/{seeded.completed}").text

    assert "<h2>Approval</h2>" in page and "<b>Weekly report</b>" in page
    assert '<a href="/limits"' in client.get("/").text and client.get("/limits").text == "<p>limits</p>"


def test_the_provider_limits_in_use_get_a_page_when_the_orchestrator_has_a_limiter(
    app: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import dataclass

    from dashboard.app import from_runtime

    @dataclass
    class BucketUsage:  # the shape of issue 17's buckets: a dataclass per bucket
        name: str
        requests_used: int
        requests_capacity: int
        provider_requests_left: int | None

    class Limiter:
        def usage(self) -> list[BucketUsage]:
            return [BucketUsage("openai:gpt-4o-mini", 12, 500, None), BucketUsage("<org>", 1, 10, 3)]

    without = TestClient(from_runtime(app.runtime), base_url="http://127.0.0.1")
    assert without.get("/limits").status_code == 404 and '<a href="/limits"' not in without.get("/").text
    monkeypatch.setattr(app.runtime.orchestrator(), "limiter", Limiter(), raising=False)
    client = TestClient(from_runtime(app.runtime), base_url="http://127.0.0.1")

    page = client.get("/limits").text
    api = client.get("/api/limits").json()

    assert '<a href="/limits"' in client.get("/").text and "/api/limits" not in client.get("/").text
    assert "openai:gpt-4o-mini" in page and "requests capacity" in page and "&lt;org&gt;" in page
    assert api["items"][0] == {
        "name": "openai:gpt-4o-mini",
        "requests_used": 12,
        "requests_capacity": 500,
        "provider_requests_left": None,
    }


def test_with_redis_down_what_needs_it_is_503_and_the_rest_works(
    board_store: TaskStore, redis_url: str
) -> None:
    from tests.acceptance.processes import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with redis_harness(board_store, dead) as harness:
        task_id = harness.task(title="Still visible")
        client = TestClient(create_app(dashboard_of(harness), Access([])), base_url="http://127.0.0.1")
        health = client.get("/api/health")
        stats = client.get("/api/stats")
        overview = client.get("/")
        listed = client.get("/tasks")
        page = client.get(f"/tasks/{task_id}")
        token = csrf_of(client, "/tasks")
        pause = client.post("/api/queue/pause", headers={"X-CSRF-Token": token})

    assert health.status_code == 503 and health.json() == {
        "status": "degraded",
        "store": "ok",
        "redis": "down",
    }
    assert stats.status_code == 503 and "Redis did not answer (ConnectionError)" in stats.json()["error"]
    assert overview.status_code == 503 and "Redis did not answer" in overview.text
    assert listed.status_code == 200 and "Still visible" in listed.text
    assert page.status_code == 200 and pause.status_code == 503


def waiting_for_approval(app: Harness, title: str = "Needs a yes") -> str:
    """A task whose agent must have ``calculate`` approved, run until it waits for the decision."""
    agent = app.agent(allowed_tools=("calculate",), approval_tools=("calculate",))
    script = [{"tool": "calculate", "arguments": {"expression": "2+3"}}, {"answer": "Five."}]
    task_id = app.task(agent, title=title, context={"script": script})
    run_tasks(app, [task_id], (TaskStatus.AWAITING_APPROVAL,))
    return task_id


def test_approvals_are_listed_shown_and_decided(
    open_client: TestClient, app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    approve_me, reject_me = waiting_for_approval(app, "Approve me"), waiting_for_approval(app, "Reject me")
    token = csrf_of(open_client)

    listed = open_client.get("/api/approvals").json()["items"]
    page = open_client.get("/approvals").text
    task_page = open_client.get(f"/tasks/{approve_me}").text
    job = open_client.get(f"/api/tasks/{approve_me}").json()
    stats = open_client.get("/api/stats").json()

    assert {(item["task_id"], item["tool"]) for item in listed} == {
        (approve_me, "calculate"),
        (reject_me, "calculate"),
    }
    assert listed[0]["arguments"] == {"expression": "2+3"}
    assert "Approve me" in page and 'class="approve"' in page and 'class="reject danger"' in page
    assert 'id="pending-approval"' in task_page and "2+3" in task_page
    assert job["pending_approval"]["tool"] == "calculate" and stats["counts"]["awaiting_approval"] == 2
    assert 'href="/approvals"' in open_client.get("/").text
    headers = {"X-CSRF-Token": token}
    no_reason = open_client.post(f"/api/tasks/{reject_me}/reject", headers=headers, json={})
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["error"]
    with caplog.at_level(logging.INFO, logger="agentq.audit"):
        approved = open_client.post(
            f"/api/tasks/{approve_me}/approve", headers=headers, json={"note": "fine"}
        )
        twice = open_client.post(f"/api/tasks/{approve_me}/approve", headers=headers)
        rejected = open_client.post(
            f"/tasks/{reject_me}/reject",
            data={"csrf_token": token, "reason": "not today", "next": "/approvals"},
            follow_redirects=False,
        )
    assert approved.json() == {"id": approve_me, "status": "queued"}
    assert twice.status_code == 409 and "not awaiting approval" in twice.json()["error"]
    assert rejected.status_code == 303 and rejected.headers["location"] == "/approvals?notice=rejected"
    assert any(
        f"action=approve target=task:{approve_me} outcome=ok" in r.getMessage() for r in caplog.records
    )
    run_tasks(app, [approve_me, reject_me], (TaskStatus.COMPLETED,), enqueue=False)
    steps = open_client.get(f"/api/tasks/{approve_me}").json()["steps"]
    assert [step["name"] for step in steps if step["kind"] == "tool"] == ["calculate"]
    assert open_client.get("/api/approvals").json()["items"] == []
    assert 'id="no-approvals"' in open_client.get("/approvals").text


def test_the_limits_page_shows_the_buckets_a_run_used(board_store: TaskStore, redis_url: str) -> None:
    from dashboard.app import from_runtime

    with redis_harness(board_store, redis_url, provider_limits={"scripted:*": {"rpm": 600}}) as limited:
        task_id = limited.task(title="Under a limit")
        run_tasks(limited, [task_id], (TaskStatus.COMPLETED,))
        client = TestClient(from_runtime(limited.runtime), base_url="http://127.0.0.1")
        page = client.get("/limits")
        buckets = client.get("/api/limits").json()["items"]

    assert page.status_code == 200 and '<a href="/limits"' in page.text
    assert [bucket["name"] for bucket in buckets] == ["scripted:scripted-1"]
    assert buckets[0]["rpm"] == 600 and buckets[0]["requests_used"] >= 1
    assert "scripted:scripted-1" in page.text
