"""The Supabase store reports an unreachable project or an HTTP 5xx as ``StoreUnavailable`` (what the
worker retries, puts back or releases); a 4xx stays PostgREST's ``APIError``. supabase-py over real
HTTP against the PostgREST fake on real Postgres."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from postgrest.exceptions import APIError

from taskstore import NewTask, StoreUnavailable, TaskStatus, new_id, utcnow
from taskstore.supabase import SupabaseTaskStore
from tests.conftest import make_agent
from tests.fakes.postgrest import FakePostgrest

pytestmark = pytest.mark.integration

ORG = "22222222-2222-4222-8222-222222222222"


@pytest.fixture
def fake(fake_postgrest: FakePostgrest) -> Iterator[FakePostgrest]:
    yield fake_postgrest
    fake_postgrest.fail_requests(500, 0)


def queued_task(store: SupabaseTaskStore) -> str:
    agent_id = make_agent(store, utcnow())
    task = store.create_task(NewTask(agent_id=agent_id, organization_id=ORG, title="t"), now=utcnow())
    assert store.mark_queued(task.id, priority=None, run_at=utcnow(), now=utcnow()) is not None
    return task.id


def claim(store: SupabaseTaskStore, task_id: str) -> object:
    return store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=utcnow(), now=utcnow())


@pytest.mark.parametrize(("status", "gateway"), [(503, False), (500, False), (502, True), (504, True)])
def test_a_5xx_answer_is_store_unavailable(
    supabase_store: SupabaseTaskStore, fake: FakePostgrest, status: int, gateway: bool
) -> None:
    task_id = queued_task(supabase_store)
    fake.fail_requests(status, 2, gateway=gateway)  # the write and its one re-send

    with pytest.raises(StoreUnavailable, match=f"Supabase answered HTTP {status} at "):
        claim(supabase_store, task_id)

    task = supabase_store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.QUEUED


def test_a_write_answered_503_once_is_re_sent_and_applied(
    supabase_store: SupabaseTaskStore, fake: FakePostgrest
) -> None:
    task_id = queued_task(supabase_store)
    fake.fail_requests(503, 1)

    assert claim(supabase_store, task_id) is not None

    task = supabase_store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.RUNNING


def test_a_read_answered_504_by_a_gateway_is_store_unavailable(
    supabase_store: SupabaseTaskStore, fake: FakePostgrest
) -> None:
    fake.fail_requests(504, 1, gateway=True)

    with pytest.raises(StoreUnavailable, match="HTTP 504"):
        supabase_store.get_task(new_id())


def test_a_4xx_answer_stays_an_api_error(supabase_store: SupabaseTaskStore, fake: FakePostgrest) -> None:
    fake.fail_requests(409, 1)

    with pytest.raises(APIError):
        supabase_store.get_task(new_id())


def test_a_project_that_does_not_answer_is_store_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        store = SupabaseTaskStore(f"http://127.0.0.1:{port}", "sb_secret_unused", timeout_s=2)
        try:
            with pytest.raises(StoreUnavailable, match="Supabase unreachable"):
                store.get_task(new_id())
        finally:
            store.close()
