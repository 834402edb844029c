"""OpenAI and Anthropic agents through the whole pipeline: real SDKs over HTTP to local fake servers,
a worker on Redis, tasks in Postgres."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from taskstore import RunStatus, TaskStatus
from taskstore.postgres import PostgresTaskStore
from tests.fakes.anthropic_server import (
    FakeAnthropicServer,
    anthropic_error,
    anthropic_text,
    anthropic_tool_uses,
)
from tests.fakes.http_server import FakeReply, FakeServer
from tests.fakes.openai_server import FakeOpenAIServer, openai_error, openai_text, openai_tool_calls
from tests.harness import Harness, redis_harness, wait_until

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Provider:
    """How to script one provider's fake server."""

    name: str
    model: str
    server: Callable[[], FakeServer]
    text: Callable[..., FakeReply]
    tools: Callable[..., FakeReply]
    error: Callable[..., FakeReply]
    #: Input and output tokens the fake reports per call, and the price per million tokens.
    prices: tuple[Decimal, Decimal]


OPENAI = Provider(
    "openai",
    "gpt-4o-mini",
    FakeOpenAIServer,
    openai_text,
    openai_tool_calls,
    openai_error,
    (Decimal("0.15"), Decimal("0.60")),
)
ANTHROPIC = Provider(
    "anthropic",
    "claude-haiku-4-5",
    FakeAnthropicServer,
    anthropic_text,
    anthropic_tool_uses,
    anthropic_error,
    (Decimal("1.00"), Decimal("5.00")),
)


@pytest.fixture(params=[OPENAI, ANTHROPIC], ids=lambda provider: provider.name)
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def server(provider: Provider) -> Iterator[FakeServer]:
    with provider.server() as fake:
        yield fake


def settings_for(provider: Provider, server: FakeServer) -> dict[str, Any]:
    base_url = server.base_url  # type: ignore[attr-defined]
    return {f"{provider.name}_api_key": "sk-test-not-a-real-key", f"{provider.name}_base_url": base_url}


@pytest.fixture
def app(
    provider: Provider, server: FakeServer, postgres_store: PostgresTaskStore, redis_url: str
) -> Iterator[Harness]:
    with redis_harness(postgres_store, redis_url, **settings_for(provider, server)) as harness:
        yield harness


def agent_for(app: Harness, provider: Provider, **fields: Any) -> str:
    values: dict[str, Any] = {
        "provider": provider.name,
        "model": provider.model,
        "allowed_tools": ("calculate",),
    }
    values.update(fields)
    return app.agent(**values)


def run_to_end(app: Harness, task_id: str, *, statuses: Mapping[TaskStatus, None] | None = None) -> None:
    final = statuses or dict.fromkeys((TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED))
    app.queue.add_task(task_id)
    with app.worker(threads=2):
        wait_until(lambda: app.store.get_task(task_id).status in final, what="the task to end")  # type: ignore[union-attr]


def test_a_three_turn_tool_loop_completes_with_transcript_tokens_and_cost(
    app: Harness, provider: Provider, server: FakeServer
) -> None:
    server.enqueue(
        provider.tools(("calculate", {"expression": "120400 + 11500"})),
        provider.tools(("calculate", {"expression": "11500 / 120400 * 100"})),
        provider.text("Revenue grew 9.55% to 131,900."),
    )
    task_id = app.task(agent_for(app, provider), title="Quarterly growth")

    run_to_end(app, task_id)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED, job and job.failed_reason
    assert job.result is not None and job.result["output"] == "Revenue grew 9.55% to 131,900."
    assert job.result["turns"] == 3
    [run] = job.runs
    tool_steps = [step for step in run.transcript or [] if step["type"] == "tool"]
    assert [step["result"] for step in tool_steps] == ["131900", "9.551495016611296"]
    assert (job.task.input_tokens, job.task.output_tokens) == (30, 15)  # 3 calls x (10 in, 5 out)
    price_in, price_out = provider.prices
    assert job.task.cost_usd == (30 * price_in + 15 * price_out) / 1_000_000
    assert run.cost_usd == job.task.cost_usd
    assert len(server.requests) == 3
    assert server.requests[0].headers.get("authorization", server.requests[0].headers.get("x-api-key"))


def test_a_disallowed_tool_is_never_run_and_the_model_is_told(
    app: Harness, provider: Provider, server: FakeServer
) -> None:
    server.enqueue(provider.tools(("get_current_time", {"timezone": "UTC"})), provider.text("Understood."))
    task_id = app.task(agent_for(app, provider))

    run_to_end(app, task_id)

    [run] = app.store.get_runs(task_id)
    [tool_step] = [step for step in run.transcript or [] if step["type"] == "tool"]
    assert tool_step["is_error"] is True and "not allowed" in tool_step["result"]
    assert "not allowed" in str(server.requests[1].body)


def test_an_authentication_error_fails_the_task_after_exactly_one_request(
    app: Harness, provider: Provider, server: FakeServer
) -> None:
    server.enqueue(provider.error(401, "Incorrect API key provided", type="authentication_error"))
    task_id = app.task(agent_for(app, provider))

    run_to_end(app, task_id)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.FAILED and job.attempts_made == 1
    assert job.failed_reason is not None and "401" in job.failed_reason
    assert "sk-test-not-a-real-key" not in job.failed_reason
    assert len(server.requests) == 1


def test_a_rate_limit_then_success_completes_using_one_attempt(
    app: Harness, provider: Provider, server: FakeServer
) -> None:
    server.enqueue(
        provider.error(429, "Rate limit reached", type="rate_limit_error", headers={"retry-after-ms": "50"}),
        provider.text("done"),
    )
    task_id = app.task(agent_for(app, provider))

    run_to_end(app, task_id)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED
    assert job.attempts_made == 1 and job.task.postponed_count == 1
    assert [run.status for run in job.runs] == [RunStatus.POSTPONED, RunStatus.COMPLETED]
    assert len(server.requests) == 2


def test_server_errors_exhaust_the_default_three_attempts(
    app: Harness, provider: Provider, server: FakeServer
) -> None:
    server.enqueue(*(provider.error(500, "internal error") for _ in range(3)))
    task_id = app.task(agent_for(app, provider))

    run_to_end(app, task_id)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.FAILED and job.attempts_made == 3
    assert len(server.requests) == 3


def test_an_organization_over_its_cap_fails_with_budget_exceeded_before_any_request(
    provider: Provider, server: FakeServer, postgres_store: PostgresTaskStore, redis_url: str
) -> None:
    with redis_harness(
        postgres_store, redis_url, monthly_budget_usd=Decimal(0), **settings_for(provider, server)
    ) as app:
        server.enqueue(provider.text("should never be asked"))
        task_id = app.task(agent_for(app, provider))

        run_to_end(app, task_id)

        job = app.queue.get_job(task_id)
        assert job is not None and job.status == TaskStatus.FAILED and job.attempts_made == 1
        assert job.failed_reason is not None and job.failed_reason.startswith("budget exceeded")
        assert server.requests == []


def test_cancelling_a_running_multi_turn_task_stops_it_before_its_next_model_call(
    app: Harness, provider: Provider, server: FakeServer
) -> None:
    first = provider.tools(("calculate", {"expression": "1 + 1"}))
    server.enqueue(FakeReply(first.body, delay_s=1.0), provider.text("too late"))
    task_id = app.task(agent_for(app, provider))
    app.queue.add_task(task_id)

    with app.worker(threads=2):
        wait_until(lambda: len(server.requests) == 1, what="the first model call")
        app.queue.remove_job(task_id)
        wait_until(
            lambda: app.store.get_task(task_id).status == TaskStatus.CANCELLED,  # type: ignore[union-attr]
            what="the task to be cancelled",
        )

    assert len(server.requests) == 1
    [run] = app.store.get_runs(task_id)
    assert run.status == RunStatus.CANCELLED


def test_an_absurd_retry_after_postpones_by_the_cap_and_the_task_completes(
    provider: Provider, server: FakeServer, postgres_store: PostgresTaskStore, redis_url: str
) -> None:
    # A provider asking to wait 100,000,000 s (3 years) is postponed by AGENTQ_MAX_POSTPONE_MS only
    server.enqueue(
        provider.error(429, "slow down", type="rate_limit_error", headers={"retry-after": "100000000"}),
        provider.text("made it"),
    )
    settings = {**settings_for(provider, server), "max_postpone_ms": 1500}
    with redis_harness(postgres_store, redis_url, **settings) as app:
        task_id = app.task(agent_for(app, provider))
        run_to_end(app, task_id)

        job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED, job and job.failed_reason
    assert job.attempts_made == 1 and job.task.postponed_count == 1
    postponed, completed = job.runs
    assert (postponed.status, completed.status) == (RunStatus.POSTPONED, RunStatus.COMPLETED)
    gap_s = (completed.started_at - postponed.started_at).total_seconds()
    assert 1.5 <= gap_s < 15, gap_s
    assert len(server.requests) == 2


@pytest.mark.parametrize("trick", ["foreign", "userinfo"])
def test_a_base_url_outside_the_allowed_prefixes_fails_at_once_and_the_key_never_leaves(
    provider: Provider, server: FakeServer, postgres_store: PostgresTaskStore, redis_url: str, trick: str
) -> None:
    # Given: the operator allows the real (fake) provider server; a second server is foreign
    with provider.server() as foreign:
        foreign.enqueue(provider.text("I have your key now"))
        server.enqueue(provider.text("allowed"))
        allowed_url: str = server.base_url  # type: ignore[attr-defined]
        foreign_url: str = foreign.base_url  # type: ignore[attr-defined]
        if trick == "userinfo":  # reads as "starts with the allowed URL", but its host is the foreign one
            foreign_url = foreign_url.replace("http://", f"http://{allowed_url.removeprefix('http://')}@")
        settings = {**settings_for(provider, server), "allowed_base_urls": (allowed_url,)}
        with redis_harness(postgres_store, redis_url, **settings) as app:
            good_agent = agent_for(app, provider, name="allowed agent", base_url=allowed_url)
            bad_agent = agent_for(app, provider, name="exfiltrator", base_url=foreign_url)
            good_task, bad_task = app.task(good_agent), app.task(bad_agent)
            app.queue.add_task(good_task)
            run_to_end(app, bad_task)
            wait_until(lambda: app.store.get_task(good_task).status == TaskStatus.COMPLETED, what="good task")  # type: ignore[union-attr]

            bad = app.queue.get_job(bad_task)
        # Then: the foreign URL got nothing; the task failed on its first attempt, naming agent and URL
        assert foreign.requests == []
        assert len(server.requests) == 1
        assert bad is not None and bad.status == TaskStatus.FAILED and bad.attempts_made == 1
        reason = bad.failed_reason or ""
        assert f"'exfiltrator' ({bad_agent})" in reason
        assert foreign_url.split("@")[-1] in reason  # user info in a URL is redacted as a password
        assert "AGENTQ_ALLOWED_BASE_URLS" in reason
        assert [run.status for run in bad.runs] == [RunStatus.FAILED]
