"""Documented limits on task inputs and batch sizes, and errors that never echo megabytes of a value."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from actors.arguments import MAX_BATCH, MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS
from actors.errors import InvalidArgument, InvalidContext, InvalidPriority
from config.errors import short_repr
from orchestrator.errors import ToolTimeout, UnknownProvider, UnknownTool
from taskstore import InMemoryTaskStore, InvalidTaskId, TaskStatus
from tests.harness import ORG, Harness, stub_harness

MEGABYTE = "a" * 1_048_576


@pytest.fixture
def app() -> Iterator[Harness]:
    with stub_harness(InMemoryTaskStore()) as harness:
        yield harness


def test_short_repr_names_the_length_of_what_it_cuts() -> None:
    assert short_repr(MEGABYTE) == repr("a" * 100) + "… (1048576 characters)"
    assert short_repr("short") == "'short'"
    assert short_repr(list(range(10_000))).endswith("(list, repr of 58890 characters)")


def test_titles_and_descriptions_at_their_limits_are_accepted(app: Harness) -> None:
    agent_id = app.agent()
    task = app.queue.create_task(
        agent_id=agent_id,
        organization_id=ORG,
        title="t" * MAX_TITLE_CHARS,
        description="d" * MAX_DESCRIPTION_CHARS,
    )
    assert task.status == TaskStatus.PENDING
    assert (MAX_TITLE_CHARS, MAX_DESCRIPTION_CHARS, MAX_BATCH) == (500, 20_000, 1_000)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"title": "t" * (MAX_TITLE_CHARS + 1)}, "title 'ttt"),
        ({"title": MEGABYTE}, "title 'aaa"),
        ({"title": "ok", "description": "d" * (MAX_DESCRIPTION_CHARS + 1)}, "description 'ddd"),
        ({"title": "ok", "description": MEGABYTE}, "description 'aaa"),
    ],
)
def test_a_title_or_description_over_its_limit_is_refused_with_a_short_message(
    app: Harness, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match="is longer than") as caught:
        app.queue.create_task(agent_id=app.agent(), organization_id=ORG, **fields)
    assert str(caught.value).startswith(message)
    assert len(str(caught.value)) < 400
    store = app.store
    assert isinstance(store, InMemoryTaskStore) and store.count_rows("ai_agent_tasks") == 0  # nothing created


def test_create_tasks_names_the_item_over_a_limit(app: Harness) -> None:
    agent_id = app.agent()
    items = [{"agent_id": agent_id, "organization_id": ORG, "title": "fine"}] * 3
    items.append({"agent_id": agent_id, "organization_id": ORG, "title": MEGABYTE})
    with pytest.raises(InvalidArgument, match=r"^tasks\[3\]: title 'a+'… \(1048576 characters\) is longer"):
        app.queue.create_tasks(items)


def test_create_tasks_refuses_a_batch_over_max_batch(app: Harness) -> None:
    agent_id = app.agent()
    items = [{"agent_id": agent_id, "organization_id": ORG, "title": "t"}] * (MAX_BATCH + 1)
    with pytest.raises(
        InvalidArgument, match=f"tasks has {MAX_BATCH + 1} items; at most {MAX_BATCH} per call"
    ):
        app.queue.create_tasks(items)
    assert len(app.queue.create_tasks(items[:MAX_BATCH])) == MAX_BATCH


def test_add_tasks_refuses_a_batch_over_max_batch(app: Harness) -> None:
    ids = [f"00000000-0000-4000-8000-{index:012d}" for index in range(MAX_BATCH + 1)]
    with pytest.raises(InvalidArgument, match=f"task_ids has {MAX_BATCH + 1} items; at most {MAX_BATCH}"):
        app.queue.add_tasks(ids)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda app: app.queue.create_tasks(MEGABYTE), InvalidArgument),
        (lambda app: app.queue.add_tasks(MEGABYTE), InvalidArgument),
        (lambda app: app.queue.add_task(MEGABYTE), InvalidTaskId),
        (
            lambda app: app.queue.create_task(
                agent_id=app.agent(), organization_id=ORG, title="t", priority=MEGABYTE
            ),
            InvalidPriority,
        ),
        (
            lambda app: app.queue.create_task(
                agent_id=app.agent(), organization_id=ORG, title="t", context=MEGABYTE
            ),
            InvalidContext,
        ),
        (
            lambda app: app.queue.create_task(agent_id=app.agent(), organization_id=ORG, title=[MEGABYTE]),
            InvalidArgument,
        ),
    ],
)
def test_errors_naming_a_huge_value_stay_short(app: Harness, call: object, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        call(app)  # type: ignore[operator]
    text = str(caught.value)
    assert len(text) < 400, text[:400]
    assert "characters" in text


def test_orchestrator_errors_naming_a_stored_or_model_value_stay_short() -> None:
    for error in (UnknownProvider(MEGABYTE), UnknownTool(MEGABYTE), ToolTimeout(MEGABYTE, 1.0)):
        assert len(str(error)) < 300 and "(1048576 characters)" in str(error)


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        (
            {"title": "weekly\x00report"},
            InvalidArgument,
            "title 'weekly\\\\x00report' contains a NUL character",
        ),
        (
            {"title": "t", "description": "a\ud800b"},
            InvalidArgument,
            "description .* contains a lone surrogate",
        ),
        ({"title": "t", "context": {"notes": ["ok", "x\x00"]}}, InvalidContext, "context contains a NUL"),
        ({"title": "t", "context": {"k\ud83d": 1}}, InvalidContext, "context contains a lone surrogate"),
    ],
    ids=["nul-title", "surrogate-description", "nul-in-context-list", "surrogate-context-key"],
)
def test_text_no_database_can_store_is_refused_naming_the_field(
    app: Harness, fields: dict[str, Any], error: type[Exception], message: str
) -> None:
    agent_id = app.agent()

    with pytest.raises(error, match=message):
        app.queue.create_task(agent_id=agent_id, organization_id=ORG, **fields)
    with pytest.raises(error, match=f"tasks\\[1\\]: {message}"):
        app.queue.create_tasks(
            [
                {"agent_id": agent_id, "organization_id": ORG, "title": "fine"},
                {"agent_id": agent_id, "organization_id": ORG, **fields},
            ]
        )
    assert app.store.count_rows("ai_agent_tasks") == 0  # type: ignore[attr-defined]
