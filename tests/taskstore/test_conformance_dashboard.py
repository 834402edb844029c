"""The conformance suite, continued: the operator's reads and schedule actions, on every store."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from taskstore import (
    NewTask,
    RetentionPolicy,
    StepKind,
    TaskFilter,
    TaskKey,
    TaskStatus,
    TaskStore,
    TaskSummary,
    Usage,
    new_id,
)
from tests.conftest import Clock, make_agent

ORG = "22222222-2222-4222-8222-222222222222"
OTHER_ORG = "44444444-4444-4444-8444-444444444444"
LEASE = timedelta(seconds=30)


def create(store: TaskStore, clock: Clock, agent_id: str, title: str = "Report", **fields: object) -> str:
    values: dict[str, object] = {"agent_id": agent_id, "organization_id": ORG, "title": title}
    values.update(fields)
    return store.create_task(NewTask(**values), now=clock()).id  # type: ignore[arg-type]


def run(store: TaskStore, clock: Clock, task_id: str) -> str:
    """Queue and claim ``task_id``; returns the run id."""
    assert store.mark_queued(task_id, priority=None, run_at=clock(), now=clock()) is not None
    run_id = new_id()
    assert store.claim(task_id, run_id=run_id, worker_id="w", lease_until=clock() + LEASE, now=clock())
    return run_id


def complete(store: TaskStore, clock: Clock, task_id: str, cost: str | None = None) -> None:
    run_id = run(store, clock, task_id)
    usage = Usage(input_tokens=10, output_tokens=5, cost_usd=Decimal(cost) if cost else None)
    assert store.complete(task_id, run_id, result={"ok": True}, usage=usage, transcript=None, now=clock())


def fail(store: TaskStore, clock: Clock, task_id: str, error: str = "boom", cost: str | None = None) -> None:
    run_id = run(store, clock, task_id)
    usage = Usage(cost_usd=Decimal(cost) if cost else None)
    assert store.fail_attempt(
        task_id, run_id, error=error, stacktrace=None, usage=usage, transcript=None, retry_at=None,
        now=clock(),
    )  # fmt: skip


def ids(summaries: list[TaskSummary]) -> list[str]:
    return [summary.id for summary in summaries]


def all_pages(store: TaskStore, task_filter: TaskFilter, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after: TaskKey | None = None
    while page := store.list_tasks(task_filter, limit=limit, after=after):
        pages.append(ids(page))
        after = page[-1].key
        assert len(pages) < 100
    return pages


def test_the_task_list_pages_newest_first_by_key_visiting_every_task_once(
    store: TaskStore, clock: Clock
) -> None:
    agent_id = make_agent(store, clock())
    created = []
    for index in range(7):
        created.append(create(store, clock, agent_id, f"Task {index}"))
        if index % 3 != 1:  # some share a created_at: the id breaks the tie
            clock.advance(1)
    expected = sorted(created, key=lambda task_id: _key_of(store, task_id), reverse=True)

    pages = all_pages(store, TaskFilter(), limit=3)

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [task_id for page in pages for task_id in page] == expected
    # Back from the last page to the first with ``before``: the same pages, still newest first.
    last = store.list_tasks(TaskFilter(), limit=3, after=TaskKey(*_key_of(store, pages[1][-1])))
    middle = store.list_tasks(TaskFilter(), limit=3, before=last[0].key)
    first = store.list_tasks(TaskFilter(), limit=3, before=middle[0].key)
    assert [ids(middle), ids(first)] == [pages[1], pages[0]]
    assert store.list_tasks(TaskFilter(), limit=3, before=first[0].key) == []


def _key_of(store: TaskStore, task_id: str) -> tuple[datetime, str]:
    task = store.get_task(task_id)
    assert task is not None
    return task.created_at, task.id


def test_each_filter_selects_its_tasks_and_filters_combine(store: TaskStore, clock: Clock) -> None:
    general = make_agent(store, clock(), name="General one", kind="general")
    reporter = make_agent(store, clock(), name="Reporter", kind="financial_report")
    other = make_agent(store, clock(), organization_id=OTHER_ORG, kind="general")
    early = create(store, clock, general, "Weekly REPORT for ACME")
    clock.advance(60)
    start = clock()
    failed = create(store, clock, reporter, "Monthly report")
    fail(store, clock, failed)
    clock.advance(60)
    foreign = create(store, clock, other, "100% done_now", organization_id=OTHER_ORG)
    clock.advance(60)
    end = clock()
    late = create(store, clock, general, "Cleanup")

    def listed(**filters: object) -> set[str]:
        return set(ids(store.list_tasks(TaskFilter(**filters), limit=50)))  # type: ignore[arg-type]

    assert listed() == {early, failed, foreign, late}
    assert listed(status=TaskStatus.FAILED) == {failed}
    assert listed(status=TaskStatus.PENDING) == {early, foreign, late}
    assert listed(agent_id=general) == {early, late}
    assert listed(organization_id=OTHER_ORG) == {foreign}
    assert listed(kind="general") == {early, foreign, late}
    assert listed(kind="financial_report") == {failed}
    assert listed(kind="no_such_kind") == set()
    assert listed(created_from=start, created_to=end) == {failed, foreign}
    assert listed(created_from=end) == {late}
    assert listed(title="report") == {early, failed}  # case-insensitive
    assert listed(title="ACME") == {early}
    assert listed(title="100%") == {foreign} and listed(title="%") == {foreign}  # LIKE characters are text
    assert listed(title="e_n") == {foreign} and listed(title="_") == {foreign}
    assert listed(kind="general", organization_id=ORG, title="report") == {early}
    assert listed(status=TaskStatus.FAILED, organization_id=OTHER_ORG) == set()


def test_a_summary_carries_the_agent_a_clipped_error_the_cost_and_archived_tasks_stay_listed(
    store: TaskStore, clock: Clock
) -> None:
    agent_id = make_agent(store, clock(), name="Reporter", kind="financial_report")
    failed = create(store, clock, agent_id, "<script>alert(1)</script>", priority=8)
    fail(store, clock, failed, error="x" * 1000, cost="0.12345678")
    clock.advance(8 * 86400)
    store.cleanup(RetentionPolicy(failed_age_s=1), now=clock())

    (summary,) = store.list_tasks(TaskFilter(), limit=10)

    assert summary.id == failed and summary.title == "<script>alert(1)</script>"
    assert (summary.status, summary.priority, summary.task_type) == (TaskStatus.FAILED, 8, "adhoc")
    assert (summary.agent_id, summary.agent_name, summary.kind) == (agent_id, "Reporter", "financial_report")
    assert summary.organization_id == ORG
    assert (summary.attempts, summary.max_attempts) == (1, 3)
    assert summary.error == "x" * 300
    assert summary.cost_usd == Decimal("0.12345678")
    assert summary.failed_at is not None and summary.archived_at == clock()
    assert summary.created_at.tzinfo is not None and summary.key == TaskKey(summary.created_at, failed)


def test_the_overview_counts_statuses_the_last_hour_depth_and_spend(store: TaskStore, clock: Clock) -> None:
    agent_id = make_agent(store, clock())
    other_agent = make_agent(store, clock(), organization_id=OTHER_ORG)
    clock.now = clock.now.replace(hour=0, minute=30)  # 00:30 UTC: yesterday is another day
    clock.advance(-3600)
    complete(store, clock, create(store, clock, agent_id), cost="1.5")  # yesterday, this month
    clock.advance(3600)
    complete(store, clock, create(store, clock, agent_id), cost="0.25")
    clock.advance(61)
    complete(store, clock, create(store, clock, agent_id), cost="0.25")
    fail(store, clock, create(store, clock, other_agent, organization_id=OTHER_ORG), cost="2")
    waiting = create(store, clock, agent_id, priority=9)
    assert store.mark_queued(waiting, priority=None, run_at=clock(), now=clock())
    delayed = create(store, clock, other_agent, organization_id=OTHER_ORG, priority=2)
    assert store.mark_queued(delayed, priority=None, run_at=clock() + timedelta(hours=1), now=clock())
    running = create(store, clock, agent_id)
    run(store, clock, running)
    cancelled = create(store, clock, agent_id)
    assert store.cancel(cancelled, now=clock())
    create(store, clock, agent_id)  # pending
    clock.advance(30)

    overview = store.overview(now=clock())

    assert overview.counts == {
        "completed": 3,
        "failed": 1,
        "queued": 2,
        "waiting": 1,
        "delayed": 1,
        "running": 1,
        "cancelled": 1,
        "pending": 1,
    }
    assert (overview.completed_last_hour, overview.failed_last_hour) == (2, 1)
    minutes = [(minute.minute.minute, minute.completed, minute.failed) for minute in overview.per_minute]
    assert minutes == [(30, 1, 0), (31, 1, 1)]
    assert all(minute.minute.tzinfo is not None for minute in overview.per_minute)
    assert overview.depth_by_priority == {9: 1, 2: 1}
    assert sorted(overview.depth_by_organization) == sorted([(ORG, 1), (OTHER_ORG, 1)])
    spend = {item.organization_id: (item.today, item.month) for item in overview.spend}
    assert spend == {ORG: (Decimal("0.5"), Decimal("2")), OTHER_ORG: (Decimal("2"), Decimal("2"))}

    mine = store.overview(now=clock(), organization_id=OTHER_ORG, top=5)
    assert mine.counts == {"failed": 1, "queued": 1, "waiting": 0, "delayed": 1}
    assert (mine.completed_last_hour, mine.failed_last_hour) == (0, 1)
    assert mine.depth_by_priority == {2: 1} and mine.depth_by_organization == ((OTHER_ORG, 1),)
    assert [(item.organization_id, item.month) for item in mine.spend] == [(OTHER_ORG, Decimal("2"))]
    assert [item.organization_id for item in store.overview(now=clock(), top=1).spend] in ([ORG], [OTHER_ORG])


def test_the_overview_of_an_empty_store_is_all_zeros(store: TaskStore, clock: Clock) -> None:
    overview = store.overview(now=clock())

    assert overview.counts == {"waiting": 0, "delayed": 0}
    assert (overview.completed_last_hour, overview.failed_last_hour, overview.per_minute) == (0, 0, ())
    assert (overview.depth_by_priority, overview.depth_by_organization, overview.spend) == ({}, (), ())


def scheduled(store: TaskStore, clock: Clock) -> str:
    task_id = create(store, clock, make_agent(store, clock()), task_type="scheduled")
    next_run = clock() + timedelta(hours=1)
    assert store.set_schedule(task_id, cron="0 * * * *", timezone="UTC", next_run_at=next_run, now=clock())
    return task_id


def test_a_schedule_is_disabled_and_enabled_by_compare_and_set(store: TaskStore, clock: Clock) -> None:
    task_id = scheduled(store, clock)
    clock.advance(1)

    disabled = store.disable_schedule(task_id, now=clock())
    again = store.disable_schedule(task_id, now=clock())

    assert disabled is not None and again is None
    assert (disabled.schedule_cron, disabled.schedule_timezone) == ("0 * * * *", "UTC")
    assert disabled.next_run_at is None
    assert store.due_schedules(now=clock() + timedelta(days=30)) == []
    next_run = clock() + timedelta(hours=2)
    enabled = store.enable_schedule(task_id, next_run_at=next_run, now=clock())
    assert enabled is not None and enabled.next_run_at == next_run
    assert store.enable_schedule(task_id, next_run_at=next_run, now=clock()) is None
    assert [due.task_id for due in store.due_schedules(now=next_run)] == [task_id]
    adhoc = create(store, clock, make_agent(store, clock()))
    assert store.disable_schedule(adhoc, now=clock()) is None
    assert store.enable_schedule(adhoc, next_run_at=next_run, now=clock()) is None
    assert store.disable_schedule(new_id(), now=clock()) is None


def test_firing_a_schedule_now_queues_it_afresh_unless_its_run_is_in_flight(
    store: TaskStore, clock: Clock
) -> None:
    task_id = scheduled(store, clock)
    next_run = clock() + timedelta(hours=1)
    run_id = run(store, clock, task_id)
    assert store.start_step(
        task_id, run_id, firing=0, seq=0, kind=StepKind.LLM, name="m", input={}, replaces=None, now=clock()
    )
    assert store.fail_attempt(
        task_id, run_id, error="boom", stacktrace=None, usage=Usage(), transcript=None, retry_at=None,
        now=clock(),
    )  # fmt: skip
    assert len(store.get_steps(task_id)) == 1
    clock.advance(5)

    fired = store.fire_schedule_now(task_id, now=clock())

    assert fired is not None
    assert (fired.status, fired.attempts, fired.error, fired.firing) == (TaskStatus.QUEUED, 0, None, 1)
    assert store.get_steps(task_id) == []  # a new firing starts its ledger afresh
    assert fired.last_run_at == clock() and fired.queued_at == clock()
    assert fired.next_run_at == next_run
    assert store.fire_schedule_now(task_id, now=clock()) is None  # queued: in flight
    run_id = new_id()
    assert store.claim(task_id, run_id=run_id, worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert store.fire_schedule_now(task_id, now=clock()) is None  # running
    assert store.complete(task_id, run_id, result={}, usage=Usage(), transcript=None, now=clock())
    assert store.fire_schedule_now(task_id, now=clock()) is not None
    adhoc = create(store, clock, make_agent(store, clock()))
    assert store.fire_schedule_now(adhoc, now=clock()) is None
