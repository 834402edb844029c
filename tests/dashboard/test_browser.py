"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through chromedriver.

One browser session for the module. Behind it: the dashboard served by uvicorn on 127.0.0.1, a Postgres
database of its own, the real Redis, and a real ``dramatiq actors`` worker process that runs the tasks.
Locally the module is skipped when Chromium or chromedriver is missing; under ``CI`` it fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from psycopg.types.json import Jsonb

from dashboard.access import Access, Grant
from dashboard.app import create_app
from taskstore import TaskStatus
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import WorkerProcess, command_env, free_port
from tests.dashboard.conftest import ADMIN_TOKEN, COMPLETES, FAILS, READONLY_TOKEN, dashboard_of
from tests.harness import Harness, redis_harness
from tests.services import redis_client, temporary_database

pytestmark = [pytest.mark.integration, pytest.mark.acceptance]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: The longest any wait in these tests lasts.
WAIT_S = 30.0


def _need_chromium() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class Site:
    """The dashboard served on a free port, over a harness on its own database, with a worker process."""

    def __init__(self, harness: Harness, url: str, store: PostgresTaskStore) -> None:
        self.harness = harness
        self.url = url
        self.store = store

    def task(
        self, title: str, script: list[dict[str, Any]] | None = None, *, agent: dict[str, Any] | None = None
    ) -> str:
        context = {"script": script} if script is not None else {}
        return self.harness.task(self.harness.agent(**(agent or {})), title=title, context=context)

    def run(self, task_id: str) -> None:
        self.harness.queue.add_task(task_id)

    def status(self, task_id: str) -> TaskStatus:
        task = self.store.get_task(task_id)
        assert task is not None
        return task.status

    def wait_status(self, task_id: str, *statuses: TaskStatus) -> None:
        wait(lambda: self.status(task_id) in statuses, f"task {task_id} to be {statuses}")

    def set_context(self, task_id: str, context: dict[str, Any]) -> None:
        """An operator fixing a task's input before retrying it."""
        with psycopg.connect(self.store._conninfo, autocommit=True) as conn:
            conn.execute("UPDATE ai_agent_tasks SET context = %s WHERE id = %s", (Jsonb(context), task_id))


def wait(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except Exception:  # the page is changing under us (reload, stale element): look again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _need_chromium()
    from tests.services import REDIS_URL

    redis_client().flushdb()
    with temporary_database() as url:
        store = PostgresTaskStore(url, max_size=6)
        store.migrate()
        with redis_harness(store, REDIS_URL) as harness:
            access = Access([Grant(ADMIN_TOKEN, "admin", None), Grant(READONLY_TOKEN, "viewer", None)])
            app = create_app(dashboard_of(harness, refresh_s=1.0), access)
            port = free_port()
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
            thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
            thread.start()
            logs = tmp_path_factory.mktemp("browser")
            worker = WorkerProcess(command_env(DATABASE_URL=url, REDIS_URL=REDIS_URL), logs / "worker.log")
            try:
                wait(lambda: server.started, "the dashboard server")
                worker.wait_ready()
                yield Site(harness, f"http://127.0.0.1:{port}", store)
            finally:
                worker.close()
                server.should_exit = True
                thread.join(timeout=10)
        store.close()
    redis_client().flushdb()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--disable-extensions"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


class Pages:
    """The browser, logged in as someone, on the site."""

    def __init__(self, driver: Any, site: Site) -> None:
        self.driver = driver
        self.site = site
        self.token: str | None = None

    def open(self, path: str) -> None:
        self.driver.get(self.site.url + path)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return wait(
            lambda: self.driver.find_element(By.CSS_SELECTOR, css),
            f"element {css!r} on {self.driver.current_url}",
        )

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def login(self, token: str, name: str = "alice") -> None:
        if self.token == token:
            return
        if self.token is not None:
            self.open("/")
            self.find("button.link").click()  # log out
            wait(lambda: "/login" in self.driver.current_url, "the login page after logging out")
        self.open("/tasks")
        wait(lambda: "/login" in self.driver.current_url, "the redirect to the login page")
        self.find("#token").send_keys(token)
        self.find("#name").send_keys(name)
        self.find("#login").click()
        wait(lambda: self.driver.current_url.endswith("/tasks"), "the page asked for before logging in")
        self.token = token


@pytest.fixture(scope="module")
def pages(browser: Any, site: Site) -> Pages:
    return Pages(browser, site)


@pytest.fixture
def admin(pages: Pages) -> Pages:
    pages.login(ADMIN_TOKEN)
    return pages


def test_log_in_and_see_a_completed_and_a_failed_task_on_the_overview(admin: Pages, site: Site) -> None:
    done = site.task("Overview completed", COMPLETES)
    broken = site.task("Overview failed", FAILS)
    site.run(done)
    site.run(broken)
    site.wait_status(done, TaskStatus.COMPLETED)
    site.wait_status(broken, TaskStatus.FAILED)

    admin.open("/")

    assert int(admin.text('[data-count="completed"] .count')) >= 1
    assert int(admin.text('[data-count="failed"] .count')) >= 1
    assert admin.text("#queue-status") == "running"
    assert "alice" in admin.text(".who")


def test_filter_and_page_the_task_list(admin: Pages, site: Site) -> None:
    created = [site.task(f"Paged item {index}") for index in range(7)]

    admin.open("/tasks?limit=3")
    admin.find("#f-title").send_keys("Paged item")
    admin.find("#apply").click()
    wait(lambda: "title=Paged+item" in admin.driver.current_url, "the filtered list")
    first = [row.get_attribute("data-task-id") for row in admin.all("#task-table tbody tr")]
    admin.find("#page-older").click()
    second = wait(lambda: _rows(admin) if _rows(admin) != first else None, "the second page")
    admin.find("#page-older").click()
    third = wait(lambda: _rows(admin) if _rows(admin) != second else None, "the last page")
    no_older = admin.all("#page-older")
    admin.find("#page-newer").click()
    again = wait(lambda: _rows(admin) if _rows(admin) != third else None, "the second page again")

    assert len(first) == 3 and len(second) == 3 and len(third) == 1 and no_older == []
    assert sorted(first + second + third) == sorted(created) and again == second
    from selenium.webdriver.support.ui import Select

    admin.open("/tasks")
    Select(admin.find("#f-status")).select_by_value("pending")
    admin.find("#apply").click()
    wait(lambda: "status=pending" in admin.driver.current_url, "the status filter")
    statuses = {cell.text for cell in admin.all("#task-table tbody td .status")}
    assert statuses == {"pending"}


def _rows(admin: Pages) -> list[str]:
    return [row.get_attribute("data-task-id") for row in admin.all("#task-table tbody tr")]


def test_open_a_failed_task_retry_it_and_see_it_complete(admin: Pages, site: Site) -> None:
    task_id = site.task("Retry me in the browser", FAILS)
    site.run(task_id)
    site.wait_status(task_id, TaskStatus.FAILED)

    admin.open("/dead-letters")
    admin.find(f'tr[data-task-id="{task_id}"] a.task-link').click()
    wait(lambda: admin.driver.current_url.endswith(f"/tasks/{task_id}"), "the task page")
    assert "provider exploded" in admin.text("#task-error")
    site.set_context(task_id, {"script": [{"answer": "Fixed and done."}]})
    admin.find("#retry").click()

    assert "Task retried" in admin.text(".notice")
    wait(
        lambda: admin.find("#task-status").get_attribute("data-status") == "completed", "the task to complete"
    )
    wait(lambda: "Fixed and done." in admin.text("#result"), "the result on the page")
    assert site.status(task_id) == TaskStatus.COMPLETED


def test_bulk_retry_asks_for_a_confirmation(admin: Pages, site: Site) -> None:
    broken = [site.task(f"Bulk broken {index}", FAILS) for index in range(2)]
    for task_id in broken:
        site.run(task_id)
    for task_id in broken:
        site.wait_status(task_id, TaskStatus.FAILED)

    admin.open("/dead-letters?title=Bulk+broken")
    admin.find("#bulk-retry").click()
    assert admin.text("#bulk-count") == "2"
    admin.find("#confirm").click()  # not ticked: the browser refuses to submit
    assert "/bulk/retry?" in admin.driver.current_url and admin.all("#bulk-result") == []
    assert {site.status(task_id) for task_id in broken} == {TaskStatus.FAILED}
    admin.find("#confirm-box").click()
    admin.find("#confirm").click()

    assert admin.text("#bulk-result") == "2 of 2 tasks retried."
    wait(  # each ran again (and failed again: its script still fails)
        lambda: all(len(site.store.get_runs(task_id)) == 2 for task_id in broken), "the retried tasks to run"
    )


def test_approve_a_waiting_task_and_see_it_complete(admin: Pages, site: Site) -> None:
    script: list[dict[str, Any]] = [
        {"tool": "calculate", "arguments": {"expression": "20+22"}},
        {"answer": "Approved: 42."},
    ]
    gated = {"allowed_tools": ("calculate",), "approval_tools": ("calculate",)}
    task_id = site.task("Approve me in the browser", script, agent=gated)
    site.run(task_id)
    site.wait_status(task_id, TaskStatus.AWAITING_APPROVAL)

    admin.open("/approvals")
    row = f'tr[data-task-id="{task_id}"]'
    assert "20+22" in admin.text(row)
    admin.find(f"{row} .approve-note").send_keys("looks right")
    admin.find(f"{row} button.approve").click()

    assert "Approved" in admin.text(".notice")
    site.wait_status(task_id, TaskStatus.COMPLETED)
    admin.open(f"/tasks/{task_id}")
    assert "Approved: 42." in admin.text("#result") and admin.all("#pending-approval") == []


def test_pause_and_resume_the_queue(admin: Pages, site: Site) -> None:
    admin.open("/")
    admin.find("#pause").click()
    assert "Queue paused" in admin.text(".notice")
    assert admin.text("#queue-status") == "paused"
    assert site.harness.queue.is_paused()

    admin.find("#resume").click()

    assert "Queue resumed" in admin.text(".notice")
    assert admin.text("#queue-status") == "running" and not site.harness.queue.is_paused()


SCRIPT_TITLE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def test_a_script_in_a_title_renders_as_text(admin: Pages, site: Site) -> None:
    task_id = site.task(SCRIPT_TITLE)

    admin.open("/tasks?title=__pwned")
    listed = admin.text(f'tr[data-task-id="{task_id}"] a.task-link')
    list_pwned = admin.driver.execute_script("return window.__pwned")
    admin.open(f"/tasks/{task_id}")
    heading = admin.text("#task-title")

    assert listed == SCRIPT_TITLE and heading == SCRIPT_TITLE
    assert list_pwned is None and admin.driver.execute_script("return window.__pwned") is None


def test_live_refresh_and_its_freeze_toggle(admin: Pages, site: Site) -> None:
    admin.open("/")
    wait(lambda: admin.text("#updated").startswith("Updated"), "a live update")
    before = int(admin.text('[data-count="pending"] .count'))
    admin.find("#freeze").click()
    assert admin.find("#freeze").get_attribute("aria-pressed") == "true"
    site.task("Arrives while frozen")
    time.sleep(2.5)  # more than two refresh intervals (1 s): a live page would have changed by now
    frozen = int(admin.text('[data-count="pending"] .count'))
    admin.find("#freeze").click()

    assert frozen == before
    wait(
        lambda: int(admin.text('[data-count="pending"] .count')) == before + 1,
        "the live count after unfreezing",
    )
    assert admin.find("#freeze").get_attribute("aria-pressed") == "false"


def test_workers_page_lists_the_worker_process(admin: Pages, site: Site) -> None:
    admin.open("/workers")

    row = wait(lambda: admin.all("#workers tbody tr"), "a worker on the workers page")[0]
    cells = [cell.text for cell in row.find_elements("css selector", "td")]
    assert cells[0] == socket.gethostname() and cells[2] == "4"


def test_a_readonly_token_sees_no_action_and_the_api_refuses(pages: Pages, site: Site) -> None:
    task_id = site.task("Read-only sees this", FAILS)
    site.run(task_id)
    site.wait_status(task_id, TaskStatus.FAILED)
    pages.login(READONLY_TOKEN, "viewer")

    pages.open(f"/tasks/{task_id}")
    assert pages.text("#task-title") == "Read-only sees this"
    assert pages.all("#retry") == [] and pages.all("#cancel") == []
    pages.open("/")
    assert pages.all("#pause") == [] and pages.all("#resume") == []
    assert "(read-only)" in pages.text(".who")
    pages.open("/dead-letters")
    assert pages.all("#bulk-retry") == []
    refused = httpx.post(
        f"{site.url}/api/tasks/{task_id}/retry", headers={"Authorization": f"Bearer {READONLY_TOKEN}"}
    )
    assert refused.status_code == 403 and "read-only" in refused.json()["error"]
    assert site.status(task_id) == TaskStatus.FAILED
    pages.login(ADMIN_TOKEN)


def test_no_page_logs_a_javascript_error(admin: Pages, site: Site) -> None:
    task_id = site.task("Console check", COMPLETES)
    site.run(task_id)
    site.wait_status(task_id, TaskStatus.COMPLETED)
    for path in ("/", "/tasks", f"/tasks/{task_id}", "/dead-letters", "/schedules", "/workers"):
        admin.open(path)
        admin.find("main")
        errors = [entry for entry in admin.driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], f"{path}: {errors}"
