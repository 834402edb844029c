"""Prometheus metrics: attempts by outcome, duration, active, queue depth, LLM tokens and cost."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from middleware.metrics import REGISTRY, Metrics
from taskstore import InMemoryTaskStore
from tests.acceptance.processes import free_port
from tests.harness import stub_harness

#: A scraped sample: its name and its labels.
Sample = tuple[str, frozenset[tuple[str, str]]]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(port: int) -> dict[Sample, float]:
    """Every sample the worker's endpoint serves, parsed from the Prometheus text format."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def served(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """The value of sample ``name`` with exactly ``labels``; fails when it is not served."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not served; served: {sorted(n for n, _ in samples)}"
    return samples[key]


def test_a_worker_counts_attempts_tokens_and_serves_them_over_http() -> None:
    port = free_port()
    with stub_harness(InMemoryTaskStore(), metrics_port=port) as harness:
        [metrics] = [m for m in harness.broker.middleware if isinstance(m, Metrics)]
        # Given the counters as they are (the registry is process-wide, other tests add to it)
        done = value("agentq_task_attempts_total", queue="general", outcome="completed")
        retried = value("agentq_task_attempts_total", queue="crashing", outcome="retried")
        failed = value("agentq_task_attempts_total", queue="crashing", outcome="failed")
        durations = value("agentq_task_duration_seconds_count", queue="general", outcome="completed")
        tokens = value("agentq_llm_tokens_total", provider="scripted", model="scripted-1", type="input")
        ok = harness.task(context={"script": [{"answer": "fine"}]})
        bad = harness.task(agent_id=harness.agent(kind="crashing"))
        harness.queue.add_task(ok)
        harness.queue.add_task(bad)

        # When one task completes and one fails its three attempts, and the endpoint is scraped
        with harness.worker() as worker:
            harness.drain(worker)
            assert metrics.bound_port is not None and metrics.bound_port >= port
            samples = scrape(metrics.bound_port)

    # Then the endpoint serves each attempt under its queue and outcome
    assert served(samples, "agentq_task_attempts_total", queue="general", outcome="completed") == done + 1
    assert served(samples, "agentq_task_attempts_total", queue="crashing", outcome="retried") == retried + 2
    assert served(samples, "agentq_task_attempts_total", queue="crashing", outcome="failed") == failed + 1
    count = served(samples, "agentq_task_duration_seconds_count", queue="general", outcome="completed")
    assert count == durations + 1
    assert served(samples, "agentq_tasks_active", queue="general") == 0
    assert served(samples, "agentq_tasks_active", queue="crashing") == 0
    assert (
        served(samples, "agentq_llm_tokens_total", provider="scripted", model="scripted-1", type="input")
        > tokens
    )
    assert served(samples, "agentq_queue_depth", queue="general", state="queued") == 0
    assert served(samples, "agentq_queue_depth", queue="general", state="delayed") == 0
    # and every attempt sample carries exactly the documented labels
    label_names = {
        frozenset(dict(labels)) for name, labels in samples if name == "agentq_task_attempts_total"
    }
    assert label_names == {frozenset({"queue", "outcome"})}
