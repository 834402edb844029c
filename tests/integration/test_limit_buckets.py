"""The model-call limiter's Redis buckets, on the real Redis: windows, settling, bookings, the provider's
word, organization quotas, and what happens when Redis is away."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from config.rate_limits import RateLimit
from middleware.metrics import Metrics
from orchestrator import AgentSpec, Orchestrator, ProviderRegistry, ScriptedProvider
from orchestrator.agent import TaskInput
from orchestrator.errors import LimitPostponed, ProviderRateLimited, ProviderUnavailable
from orchestrator.limits import LimitPolicy, RedisLimiter, margin_ms
from orchestrator.messages import RateLimitReport
from taskstore import InMemoryTaskStore, TaskStatus
from tests.acceptance.processes import ThrowawayRedis, WorkerProcess, command_env, free_port
from tests.harness import stub_harness, wait_until
from tests.integration.limit_load import answer, most_in_any_window, request, run
from tests.unit.test_metrics import scrape, served, value

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ORG_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
ORG_B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


class Sleeps:
    """A fake ``sleep`` that records what the limiter asked for."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def limiter_for(
    client: redis.Redis,
    models: dict[str, RateLimit] | None = None,
    *,
    max_wait_ms: int = 0,
    sleep: Callable[[float], None] | None = None,
    **orgs: object,
) -> RedisLimiter:
    policy = LimitPolicy(models or {}, **orgs)  # type: ignore[arg-type]
    return RedisLimiter(client, policy, max_wait_ms=max_wait_ms, sleep=sleep or Sleeps())


def task(task_id: str, organization_id: str | None = None) -> TaskInput:
    return TaskInput(id=task_id, title="t", organization_id=organization_id)


MINUTE_TOKENS = {"openai:m": RateLimit(tpm=1000)}


def slots(client: redis.Redis, bucket: str) -> int:
    return int(client.zcard(f"agentq:limits:{bucket}:f"))


# -- windows, under load ----------------------------------------------------------------------------


def test_threads_never_exceed_the_request_limit_in_any_window(redis_url: str) -> None:
    # Given 10 requests per 1-s window and 8 threads calling as fast as they are let
    load = run(redis_url, RateLimit(rpm=600, window_s=1), seconds=3.0, threads=8, max_wait_ms=100)

    # Then no second held more than 10 calls, and the bucket was used, not just refused
    calls, _ = most_in_any_window(load.sends, 1.0)
    assert calls <= 10, calls
    assert len(load.sends) >= 25, len(load.sends)  # three windows' worth, give or take the first
    assert load.booked > 0  # waits past 100 ms went through booked slots


def test_tokens_never_exceed_the_token_limit_in_any_window(redis_url: str) -> None:
    # Given 600 tokens per 1-s window, calls estimated at 105 tokens that use 1-105
    load = run(
        redis_url, RateLimit(tpm=36_000, window_s=1), seconds=3.0, threads=8, max_wait_ms=100, max_tokens=100
    )

    # Then no second's calls used more than 600 tokens, and the bucket was used: at least at the rate of
    # the estimates, which is how a queue of booked slots moves (their use is known only when they settle)
    _, tokens = most_in_any_window(load.sends, 1.0)
    assert tokens <= 600, tokens
    assert len(load.sends) >= 2 * 600 // 105, len(load.sends)


def test_workers_in_three_processes_share_one_window(redis_url: str) -> None:
    # Given three processes of four threads each, on one bucket of 12 requests per 2-s window
    command = [
        sys.executable,
        "-m",
        "tests.integration.limit_load",
        redis_url,
        "--rpm",
        "360",
        "--window-s",
        "2",
    ]
    processes = [
        subprocess.Popen(
            [*command, "--seconds", "4", "--threads", "4", "--name", f"p{index}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(3)
    ]
    results = [json.loads(process.communicate(timeout=60)[0]) for process in processes]

    # Then all of them together never sent more than 12 in any 2 s, and each got calls through
    sends = [(at, used) for result in results for at, used in result["sends"]]
    calls, _ = most_in_any_window(sends, 2.0)
    assert calls <= 12, calls
    assert all(result["sends"] for result in results)
    assert len(sends) >= 24, len(sends)


# -- settling ---------------------------------------------------------------------------------------


def test_settling_below_the_estimate_gives_the_tokens_back_at_once(client: redis.Redis) -> None:
    # Given a call in flight counted at its estimate, 900 of 1000 tokens
    limiter = limiter_for(client, MINUTE_TOKENS)
    first = limiter.acquire("openai", request(895), task("a"))
    assert limiter.usage(["openai:m"])[0].tokens_used == 900

    # When it settles for 100
    first.settle(response=answer(100))

    # Then a call of 800 goes at once (900 + 800 would not have fit)
    second = limiter.acquire("openai", request(795), task("b"))
    second.settle(response=answer(800))
    assert limiter.usage(["openai:m"])[0].tokens_used == 900


def test_settling_above_the_estimate_charges_the_difference(client: redis.Redis) -> None:
    limiter = limiter_for(client, MINUTE_TOKENS)
    limiter.acquire("openai", request(95), task("a")).settle(
        response=answer(1000)
    )  # estimated 100, used 1000

    with pytest.raises(LimitPostponed) as caught:
        limiter.acquire("openai", request(5), task("b"))

    # The next call waits for the big one to leave the window: about a minute
    assert caught.value.postpone_cause == "tpm" and caught.value.booked
    assert 55_000 < caught.value.postpone_ms <= 60_001  # ends round up to the next millisecond
    assert limiter.usage(["openai:m"])[0].tokens_used == 1000


def test_a_failed_call_keeps_its_estimate(client: redis.Redis) -> None:
    limiter = limiter_for(client, MINUTE_TOKENS)
    permit = limiter.acquire("openai", request(595), task("a"))
    permit.settle(error=ProviderUnavailable("openai: HTTP 503", provider="openai", status_code=503))

    with pytest.raises(LimitPostponed):
        limiter.acquire("openai", request(595), task("b"))
    usage = limiter.usage(["openai:m"])[0]
    assert (usage.requests_used, usage.tokens_used, usage.in_flight) == (1, 600, 0)


def test_a_waiting_call_takes_the_tokens_an_in_flight_call_gives_back(client: redis.Redis) -> None:
    # Given a call in flight holding 900 of 1000 tokens (its estimate), settled 0.3 s from now for 100
    limiter = limiter_for(client, MINUTE_TOKENS, max_wait_ms=2000, sleep=time.sleep)
    first = limiter.acquire("openai", request(895), task("a"))
    timer = threading.Timer(0.3, lambda: first.settle(response=answer(100)))
    timer.start()

    # When another call of 800 asks, it looks again within its short wait instead of booking a minute ahead
    began = time.monotonic()
    limiter.acquire("openai", request(795), task("b"))
    timer.join()

    assert 0.25 <= time.monotonic() - began < 1.5
    assert slots(client, "openai:m") == 1  # b in flight, a settled


# -- bookings ---------------------------------------------------------------------------------------


def test_a_postponed_call_comes_back_to_its_booked_slot(client: redis.Redis) -> None:
    # Given 2 requests per 1-s window, used
    limits = {"openai:m": RateLimit(rpm=120, window_s=1)}
    limiter = limiter_for(client, limits)
    for name in ("a", "b"):
        limiter.acquire("openai", request(1), task(name)).settle(response=answer(5))

    # When a third call is postponed, it books the slot when the first leaves the window
    with pytest.raises(LimitPostponed) as caught:
        limiter.acquire("openai", request(1), task("c"))
    assert caught.value.booked and 900 <= caught.value.postpone_ms <= 1001
    assert limiter.usage(["openai:m"])[0].waiting == 1

    # And a fourth queues behind it, for the second one's slot
    with pytest.raises(LimitPostponed):
        limiter.acquire("openai", request(1), task("d"))
    booked = client.zscore("agentq:limits:openai:m:f", "c"), client.zscore("agentq:limits:openai:m:f", "d")
    assert booked[0] is not None and booked[1] is not None and booked[1] >= booked[0]

    # Then back on time, c takes its slot without booking another
    time.sleep(caught.value.postpone_ms / 1000)
    limiter.acquire("openai", request(1), task("c"))
    assert slots(client, "openai:m") == 2  # c in flight, d still booked
    state = "agentq:limits:openai:m:s"
    assert client.hexists(state, "b:d") and not client.hexists(state, "b:c")


def test_a_task_that_comes_back_too_late_loses_its_slot_and_queues_again(client: redis.Redis) -> None:
    limits = {"openai:m": RateLimit(rpm=60, window_s=1)}  # 1 per second; margin 200 ms
    limiter = limiter_for(client, limits)
    limiter.acquire("openai", request(1), task("a")).settle(response=answer(5))
    with pytest.raises(LimitPostponed) as caught:
        limiter.acquire("openai", request(1), task("b"))

    time.sleep(caught.value.postpone_ms / 1000 + margin_ms(1000) / 1000 + 0.1)

    # Its slot lapsed; now it simply fits (the window is empty again)
    limiter.acquire("openai", request(1), task("b"))
    assert slots(client, "openai:m") == 1
    assert not client.hexists("agentq:limits:openai:m:s", "b:b")


def test_a_slot_in_use_that_never_settled_keeps_counting(client: redis.Redis) -> None:
    limiter = limiter_for(client, {"openai:m": RateLimit(rpm=3)})
    limiter.acquire("openai", request(1), task("lost"))  # its worker died: never settled

    limiter.acquire("openai", request(1), task("lost"))  # the task runs again elsewhere

    assert limiter.usage(["openai:m"])[0].requests_used == 2
    assert slots(client, "openai:m") == 2


def test_a_short_wait_happens_in_the_worker(client: redis.Redis) -> None:
    sleeps = Sleeps()
    limiter = limiter_for(client, {"openai:m": RateLimit(rpm=60, window_s=1)}, max_wait_ms=2000, sleep=sleeps)
    limiter.acquire("openai", request(1), task("a")).settle(response=answer(5))

    limiter.acquire("openai", request(1), task("b"))  # no exception: it waited

    assert len(sleeps.calls) == 1 and 0.7 < sleeps.calls[0] <= 1.001


def test_the_wait_never_takes_more_than_half_the_run_time_left(client: redis.Redis) -> None:
    limiter = limiter_for(client, {"openai:m": RateLimit(rpm=60, window_s=1)}, max_wait_ms=2000)
    limiter.acquire("openai", request(1), task("a")).settle(response=answer(5))
    short = replace(request(1), timeout_s=0.5)  # 0.5 s left in the run

    with pytest.raises(LimitPostponed):
        limiter.acquire("openai", short, task("b"))


# -- the provider's word ----------------------------------------------------------------------------


def test_a_429_pauses_the_model_for_every_worker(redis_url: str) -> None:
    # Given two workers (two clients), and a model without limits of its own
    first = limiter_for(redis.Redis.from_url(redis_url), {"openai:other": RateLimit(rpm=5)})
    sleeps = Sleeps()
    second = limiter_for(redis.Redis.from_url(redis_url), {"openai:other": RateLimit(rpm=5)}, sleep=sleeps)

    # When the first gets a 429 with retry-after 3
    permit = first.acquire("openai", request(1), task("a"))
    permit.settle(error=ProviderRateLimited("openai: HTTP 429", retry_after_ms=3000, provider="openai"))

    # Then the second does not call for 3 s: postponed (nothing to book: the provider decides)
    with pytest.raises(LimitPostponed) as caught:
        second.acquire("openai", request(1), task("b"))
    assert caught.value.postpone_cause == "provider" and not caught.value.booked
    assert caught.value.counts_toward_max_postpones
    assert 2900 <= caught.value.postpone_ms <= 3001
    # And a worker that may wait 5 s sleeps until the pause ends, then calls
    patient = limiter_for(
        redis.Redis.from_url(redis_url), {"openai:other": RateLimit(rpm=5)}, max_wait_ms=5000, sleep=sleeps
    )
    patient.acquire("openai", request(1), task("c"))
    assert 2.8 <= sleeps.calls[-1] <= 3.001
    assert second.usage(["openai:m"])[0].paused_ms > 2000


def test_a_pause_moves_a_limited_models_queue_after_it(client: redis.Redis) -> None:
    limiter = limiter_for(client, {"openai:m": RateLimit(rpm=600, window_s=1)})
    limiter.acquire("openai", request(1), task("a")).settle(
        error=ProviderRateLimited("openai: HTTP 429", retry_after_ms=2000, provider="openai")
    )

    with pytest.raises(LimitPostponed) as caught:
        limiter.acquire("openai", request(1), task("b"))

    assert caught.value.postpone_cause == "provider" and 1900 <= caught.value.postpone_ms <= 2001


def test_remaining_requests_shrink_the_bucket_until_the_reset(redis_url: str) -> None:
    first = limiter_for(redis.Redis.from_url(redis_url), {"openai:m": RateLimit(rpm=500)})
    second = limiter_for(redis.Redis.from_url(redis_url), {"openai:m": RateLimit(rpm=500)})
    told = replace(answer(10), rate_limits=RateLimitReport(1, 4000, None, None))

    first.acquire("openai", request(1), task("a")).settle(response=told)  # "one more until 4 s from now"
    second.acquire("openai", request(1), task("b"))  # the one more
    with pytest.raises(LimitPostponed) as caught:
        second.acquire("openai", request(1), task("c"))

    assert caught.value.postpone_cause == "provider" and 3800 <= caught.value.postpone_ms <= 4001
    usage = second.usage(["openai:m"])[0]
    assert (usage.provider_requests_left, usage.requests_used) == (0, 2)


def test_remaining_tokens_below_the_estimate_wait_for_the_reset(client: redis.Redis) -> None:
    limiter = limiter_for(client, {"openai:m": RateLimit(rpm=500)})
    told = replace(answer(10), rate_limits=RateLimitReport(None, None, 50, 2000))
    limiter.acquire("openai", request(1), task("a")).settle(response=told)

    limiter.acquire("openai", request(40), task("small"))  # 45 of the 50 left
    with pytest.raises(LimitPostponed) as caught:
        limiter.acquire("openai", request(40), task("big"))

    assert caught.value.postpone_cause == "provider" and caught.value.postpone_ms <= 2001


# -- organization quotas ----------------------------------------------------------------------------


def test_one_organization_at_its_quota_does_not_hold_back_another(client: redis.Redis) -> None:
    # Given a model with room for everyone and organizations of 1000 tokens a minute each
    limiter = limiter_for(client, {"openai:m": RateLimit(rpm=1000)}, org_tpm=1000)
    for index in range(2):
        limiter.acquire("openai", request(395), task(f"a{index}", ORG_A)).settle(response=answer(400))

    # When A asks for more, it waits for its own quota; B goes at once
    with pytest.raises(LimitPostponed) as caught:
        limiter.acquire("openai", request(395), task("a2", ORG_A))
    limiter.acquire("openai", request(395), task("b0", ORG_B))

    assert caught.value.postpone_cause == "org_tpm" and caught.value.bucket == f"org:{ORG_A}"
    # A's waiting call holds a slot in its organization's bucket only, none of the model's
    assert slots(client, f"org:{ORG_A}") == 1 and slots(client, "openai:m") == 1  # the 1 is B's call


def test_an_organizations_own_entry_overrides_the_default(client: redis.Redis) -> None:
    limiter = limiter_for(client, org_tpm=100_000, orgs={ORG_A: RateLimit(rpm=1)})
    limiter.acquire("openai", request(1), task("a0", ORG_A)).settle(response=answer(5))

    with pytest.raises(LimitPostponed) as caught:
        limiter.acquire("openai", request(1), task("a1", ORG_A))

    assert caught.value.postpone_cause == "org_rpm"
    [usage] = limiter.usage([f"org:{ORG_A}"])
    assert (usage.rpm, usage.tpm, usage.requests_used) == (1, 100_000, 1)


# -- Redis away -------------------------------------------------------------------------------------


def test_without_redis_a_call_is_postponed_never_made_unlimited(caplog: pytest.LogCaptureFixture) -> None:
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    limiter = limiter_for(dead, {"openai:m": RateLimit(rpm=5)})

    with pytest.raises(LimitPostponed) as caught:
        limiter.acquire("openai", request(1), task("a"))

    assert caught.value.postpone_cause == "limiter_unavailable" and not caught.value.booked
    assert (
        caught.value.counts_toward_max_postpones
    )  # an outage outlasting AGENTQ_MAX_POSTPONES ends in retries
    assert 5000 <= caught.value.postpone_ms <= 6000
    assert "Provider limits unavailable" in caplog.text


def test_settling_without_redis_logs_and_lets_the_run_go_on(caplog: pytest.LogCaptureFixture) -> None:
    server = ThrowawayRedis()
    try:
        limiter = limiter_for(
            redis.Redis.from_url(server.url, socket_timeout=2), {"openai:m": RateLimit(rpm=5)}
        )
        permit = limiter.acquire("openai", request(1), task("a"))
        server.kill()  # Redis goes away during the model call

        permit.settle(response=answer(5))  # does not raise
    finally:
        server.close()

    assert "Could not settle a model call in openai:m" in caplog.text


# -- through the agent loop -------------------------------------------------------------------------


def test_the_orchestrator_asks_before_each_model_call_and_a_postponement_keeps_the_run_so_far(
    client: redis.Redis,
) -> None:
    # Given a scripted agent with two model calls, under 1 request a minute
    limiter = limiter_for(client, {"scripted:scripted-1": RateLimit(rpm=1)})
    orchestrator = Orchestrator(ProviderRegistry({"scripted": ScriptedProvider}), limiter=limiter)
    agent = AgentSpec(
        id="a", name="calc", provider="scripted", model="scripted-1", allowed_tools=("calculate",)
    )
    script = {"script": [{"tool": "calculate", "arguments": {"expression": "2+2"}}, {"answer": "4"}]}

    # When it runs, the second call does not fit
    with pytest.raises(LimitPostponed) as caught:
        orchestrator.run(agent, TaskInput(id="t1", title="add", context=script))

    # Then the run is postponed with its first turn recorded, and a booked slot waits for it
    assert caught.value.booked and caught.value.postpone_cause == "rpm"
    assert [entry["type"] for entry in caught.value.transcript] == ["model", "tool"]
    assert limiter.usage(["scripted:scripted-1"])[0].waiting == 1


# -- metrics ----------------------------------------------------------------------------------------


def test_metrics_show_each_bucket_and_count_postponements_by_cause(redis_url: str) -> None:
    # Given a worker with metrics, and its scripted model allowed one request a minute
    port = free_port()
    limits = {"scripted:scripted-1": {"rpm": 1}}
    before = value("agentq_task_postponements_total", queue="general", cause="rpm")
    with stub_harness(
        InMemoryTaskStore(), metrics_port=port, redis_url=redis_url, provider_limits=limits
    ) as app:
        [metrics] = [m for m in app.broker.middleware if isinstance(m, Metrics)]
        first, second = app.task(), app.task()

        # When two tasks run: the second waits for the next minute (postponed, its slot booked)
        with app.worker():
            app.queue.add_task(first)
            wait_until(lambda: app.store.get_task(first).status == TaskStatus.COMPLETED)  # type: ignore[union-attr]
            app.queue.add_task(second)
            wait_until(lambda: app.store.get_task(second).postponed_count == 1)  # type: ignore[union-attr]
            assert metrics.bound_port is not None
            samples = scrape(metrics.bound_port)

    # Then the endpoint shows the bucket's capacity, use and the booked slot, and the postponement's cause
    bucket = "scripted:scripted-1"
    assert served(samples, "agentq_limit_capacity", bucket=bucket, unit="requests") == 1
    assert served(samples, "agentq_limit_used", bucket=bucket, unit="requests") == 1
    assert served(samples, "agentq_limit_waiting", bucket=bucket) == 1
    assert served(samples, "agentq_limit_in_flight", bucket=bucket) == 0
    assert served(samples, "agentq_limit_paused_seconds", bucket=bucket) == 0
    assert served(samples, "agentq_task_postponements_total", queue="general", cause="rpm") == before + 1


# -- agentq limits ----------------------------------------------------------------------------------


def test_agentq_limits_prints_each_bucket_and_says_when_nothing_is_configured(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    show = "from actors.cli.commands import main; raise SystemExit(main(['limits']))"
    sqlite = str(tmp_path / "agentq.db")
    limits = '{"openai:*": {"rpm": 100, "window_s": 6}}'
    limiter = limiter_for(client, {"openai:*": RateLimit(rpm=100, window_s=6)})
    limiter.acquire("openai", request(1), task("a"))  # in flight
    limiter.acquire("openai", request(1), task("b")).settle(response=answer(7))

    shown = WorkerProcess.run_python(
        command_env(REDIS_URL=redis_url, AGENTQ_SQLITE_PATH=sqlite, AGENTQ_PROVIDER_LIMITS_JSON=limits), show
    )
    nothing = WorkerProcess.run_python(command_env(REDIS_URL=redis_url, AGENTQ_SQLITE_PATH=sqlite), show)

    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["configured"]["models"] == {"openai:*": {"rpm": 100, "tpm": None, "window_s": 6}}
    [bucket] = report["buckets"]
    assert (bucket["name"], bucket["requests_capacity"], bucket["requests_used"], bucket["in_flight"]) == (
        "openai:m",
        10,
        2,
        1,
    )
    assert bucket["tokens_used"] == 6 + 7  # the one in flight at its estimate, the settled one as used
    assert nothing.returncode == 0 and json.loads(nothing.stdout)["buckets"] == []
    assert "no provider or organization limits are configured" in nothing.stderr
