"""Who may see and do what: tokens, sessions, CSRF, read-only and organization tokens, escaping, secrets."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from actors.runtime import build_runtime
from dashboard.access import SESSION_COOKIE, Access, Grant, Principal, check_bind
from dashboard.app import create_app, from_runtime
from taskstore import TaskStatus
from taskstore.postgres import PostgresTaskStore
from tests.dashboard.conftest import (
    ADMIN_TOKEN,
    ORG_TOKEN,
    READONLY_TOKEN,
    Seeded,
    bearer,
    csrf_of,
    dashboard_of,
    seed,
)
from tests.harness import OTHER_ORG, Harness, harness_settings, redis_harness

pytestmark = pytest.mark.integration


def login(client: TestClient, token: str, name: str = "alice") -> Any:
    csrf = csrf_of(client, "/login")
    return client.post("/login", data={"csrf_token": csrf, "token": token, "name": name, "next": "/tasks"},
                       follow_redirects=False)  # fmt: skip


def test_without_credentials_the_api_says_401_and_pages_send_to_the_login(token_app: Any) -> None:
    client = TestClient(token_app)

    api = client.get("/api/tasks")
    page = client.get("/tasks?status=failed", follow_redirects=False)
    wrong = client.get("/api/stats", headers=bearer("not-the-token-at-all"))

    assert api.status_code == 401 and api.headers["www-authenticate"].startswith("Bearer")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Ftasks%3Fstatus%3Dfailed"
    assert wrong.status_code == 401
    assert client.get("/api/health").status_code == 200  # load balancers need no token
    assert client.get("/login").status_code == 200


def test_a_bearer_token_opens_the_api_and_pages_without_csrf(
    token_app: Any, seeded: Seeded, app: Harness
) -> None:
    client = TestClient(token_app, headers=bearer(ADMIN_TOKEN))

    assert client.get("/api/stats").status_code == 200 and client.get("/").status_code == 200
    retried = client.post(f"/api/tasks/{seeded.failed}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"


def test_the_browser_logs_in_once_and_gets_a_signed_httponly_strict_cookie(
    token_app: Any, seeded: Seeded, app: Harness
) -> None:
    client = TestClient(token_app)

    no_csrf = client.post("/login", data={"token": ADMIN_TOKEN})
    bad = login(client, "wrong-token-0123456789")
    good = login(client, ADMIN_TOKEN)

    assert no_csrf.status_code == 403 and bad.status_code == 401 and "Invalid token." in bad.text
    assert good.status_code == 303 and good.headers["location"] == "/tasks"
    cookie = next(
        value for name, value in good.headers.items() if name == "set-cookie" and SESSION_COOKIE in value
    )
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert ADMIN_TOKEN not in cookie
    assert client.get("/tasks").status_code == 200 and "alice" in client.get("/").text
    # Changes through the session need the CSRF token of the session.
    assert client.post(f"/api/tasks/{seeded.failed}/retry").status_code == 403
    token = csrf_of(client)
    assert (
        client.post(f"/api/tasks/{seeded.failed}/retry", headers={"X-CSRF-Token": token}).status_code == 200
    )
    # A tampered cookie is no session.
    value = client.cookies[SESSION_COOKIE]
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, value[:-4] + ("0000" if not value.endswith("0000") else "1111"))
    assert client.get("/api/stats").status_code == 401
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, value)
    assert client.get("/api/stats").status_code == 200
    logout = client.post("/logout", data={"csrf_token": csrf_of(client)}, follow_redirects=False)
    assert logout.status_code == 303 and f'{SESSION_COOKIE}=""' in logout.headers["set-cookie"]


def test_a_session_does_not_outlive_its_token() -> None:
    old = Access([Grant("first-token-0123456789", "admin", None)], signing_key=b"k" * 32)
    rotated = Access([Grant("second-token-012345678", "admin", None)], signing_key=b"k" * 32)
    principal = old.principal_for(old.grants[0], "bob")
    cookie = old.session_value(principal, "nonce")

    assert old.read_session(cookie) == (principal, "nonce")
    assert rotated.read_session(cookie) is None
    assert old.read_session(old.session_value(principal, "nonce", now=0)) is None  # expired


def test_a_readonly_token_sees_everything_and_changes_nothing(
    token_app: Any, seeded: Seeded, app: Harness
) -> None:
    client = TestClient(token_app, headers=bearer(READONLY_TOKEN))

    failed_page = client.get(f"/tasks/{seeded.failed}").text
    overview = client.get("/").text
    dead = client.get("/dead-letters").text

    assert 'id="retry"' not in failed_page and 'id="cancel"' not in failed_page
    assert 'id="pause"' not in overview and 'id="resume"' not in overview
    assert 'id="bulk-retry"' not in dead and "(read-only)" in overview
    for path in (
        f"/api/tasks/{seeded.failed}/retry",
        f"/api/tasks/{seeded.pending}/cancel",
        "/api/queue/pause",
        "/api/tasks/bulk/retry?confirm=true",
        f"/api/schedules/{seeded.pending}/run",
        f"/api/tasks/{seeded.pending}/approve",
        f"/api/tasks/{seeded.pending}/reject?reason=no",
    ):
        response = client.post(path)
        assert response.status_code == 403, path
        assert "read-only" in response.json()["error"]
    assert client.post(f"/tasks/{seeded.failed}/retry", data={}).status_code == 403
    assert app.store.get_task(seeded.failed).status == TaskStatus.FAILED  # type: ignore[union-attr]
    assert client.get("/workers").status_code == 200


def test_an_organization_token_sees_its_own_tasks_only(token_app: Any, app: Harness) -> None:
    mine = seed(app)
    theirs = app.task(
        app.agent(organization_id=OTHER_ORG), organization_id=OTHER_ORG, title="Their secret plan"
    )
    client = TestClient(token_app, headers=bearer(ORG_TOKEN))

    listed = {item["id"] for item in client.get("/api/tasks").json()["items"]}
    forced = {
        item["id"] for item in client.get("/api/tasks", params={"organization": OTHER_ORG}).json()["items"]
    }

    assert listed == {mine.completed, mine.failed, mine.pending} and theirs not in forced
    assert client.get(f"/api/tasks/{theirs}").status_code == 404
    assert client.get(f"/tasks/{theirs}").status_code == 404
    assert client.get(f"/api/tasks/{theirs}/events").status_code == 404
    assert "Their secret plan" not in client.get("/tasks").text
    assert client.get("/api/stats").json()["counts"]["pending"] == 1
    assert client.get("/api/workers").status_code == 403 and client.get("/workers").status_code == 403
    assert client.post("/api/queue/pause").status_code == 403
    assert client.post(f"/api/tasks/{mine.failed}/retry").status_code == 403


def test_without_tokens_only_loopback_host_names_are_answered(app: Harness) -> None:
    application = create_app(dashboard_of(app), Access([]))

    for host in ("http://127.0.0.1:8600", "http://localhost", "http://[::1]:8600"):
        assert TestClient(application, base_url=host).get("/api/stats").status_code == 200, host
    rebound = TestClient(application, base_url="http://attacker.example").get("/api/stats")
    assert rebound.status_code == 400


def test_binding_beyond_loopback_needs_a_token() -> None:
    from config.errors import ConfigError

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, Access([]))
    for host in ("0.0.0.0", "::", "192.168.1.10", "dashboard.internal"):
        with pytest.raises(ConfigError, match="without a token"):
            check_bind(host, Access([]))
        check_bind(host, Access([Grant(ADMIN_TOKEN, "admin", None)]))


def test_tokens_are_matched_in_constant_time_against_every_grant() -> None:
    access = Access([Grant(ADMIN_TOKEN, "admin", None), Grant(READONLY_TOKEN, "viewer", None)])

    assert access.match(READONLY_TOKEN) == access.grants[1]
    assert access.match(ADMIN_TOKEN[:-1]) is None and access.match("") is None
    assert Principal("viewer", None, "x").can_act is False and Principal("admin", "o", "x").can_act is False


TITLE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def test_a_script_in_a_title_is_text_everywhere(open_client: TestClient, app: Harness) -> None:
    task_id = app.task(title=TITLE, task_type="scheduled", description="<b>bold?</b>")
    app.queue.add_scheduled_task(task_id, "0 * * * *")

    for path in ("/tasks", f"/tasks/{task_id}", "/schedules", f"/bulk/cancel?title={TITLE}"):
        page = open_client.get(path).text
        assert "<script>window.__pwned" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;" in page, path
    assert "&lt;b&gt;bold?&lt;/b&gt;" in open_client.get(f"/tasks/{task_id}").text
    assert open_client.get("/api/tasks").json()["items"][0]["title"] == TITLE  # data, not markup


def test_no_secret_reaches_a_page_or_a_response(postgres_store: PostgresTaskStore, redis_url: str) -> None:
    # Given tasks in Postgres, and a dashboard whose settings hold every kind of secret
    with redis_harness(postgres_store, redis_url) as app:
        seeded = seed(app)
    password = "Db-Passw0rd-never-shown"
    postgres_url = postgres_store._conninfo
    secrets = {
        "database_url": postgres_dsn(postgres_url, password),
        "openai_api_key": "sk-proj-openaikeyneverSHOWN1234567890",
        "anthropic_api_key": "sk-ant-anthropickeyneverSHOWN123456",
        "sentry_dsn": "https://publickeyneverSHOWN@sentry.invalid/1",
        "dashboard_token": ADMIN_TOKEN,
        "dashboard_readonly_token": READONLY_TOKEN,
    }
    runtime = build_runtime(harness_settings(redis_url=redis_url, **secrets))
    client = TestClient(from_runtime(runtime), headers=bearer(ADMIN_TOKEN))
    crawled = [
        client.get(path)
        for path in (
            "/", "/partials/overview", "/tasks", "/dead-letters", "/schedules", "/workers", "/bulk/retry",
            f"/tasks/{seeded.failed}", f"/tasks/{seeded.completed}", "/api/stats", "/api/tasks",
            f"/api/tasks/{seeded.failed}", "/api/schedules", "/api/workers", "/api/health", "/nope",
            f"/api/tasks/{seeded.failed}/events",
        )
    ]  # fmt: skip
    runtime.store.close()

    assert [response.status_code for response in crawled if response.status_code != 200] == [404]  # /nope
    every = "\n".join(response.text + str(response.headers) for response in crawled)
    shown = [name for name, value in secrets.items() if value in every or value.split("@")[0] in every]
    assert shown == [] and password not in every
    assert "sk-proj-abcdefghijklmnopqrstuvwxyz0123" not in every  # the key a user put in a task's context
    assert re.search(r"api_key.{0,20}\[Filtered\]", every)


def postgres_dsn(conninfo: str, password: str) -> str:
    """A ``postgresql://`` URL of the test database with a password (the server trusts local users, so
    the password is never checked: it is only there to be looked for)."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(conninfo)
    return (
        f"postgresql://{parts['user']}:{password}@{parts['host']}:{parts.get('port', 5432)}/{parts['dbname']}"
    )
