"""Prometheus metrics: attempts by outcome, duration, active, queue depth, LLM tokens and cost."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry

from middleware.metrics import REGISTRY, Metrics
from taskstore import InMemoryTaskStore
from tests.acceptance.processes import free_port
from tests.harness import stub_harness


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_worker_counts_attempts_tokens_and_serves_them_over_http() -> None:
    port = free_port()
    with stub_harness(InMemoryTaskStore(), metrics_port=port) as harness:
        [metrics] = [m for m in harness.broker.middleware if isinstance(m, Metrics)]
        done = value("agentq_task_attempts_total", queue="general", outcome="completed")
        retried = value("agentq_task_attempts_total", queue="crashing", outcome="retried")
        failed = value("agentq_task_attempts_total", queue="crashing", outcome="failed")
        tokens = value("agentq_llm_tokens_total", provider="scripted", model="scripted-1", type="input")
        ok = harness.task(context={"script": [{"answer": "fine"}]})
        bad = harness.task(agent_id=harness.agent(kind="crashing"))
        harness.queue.add_task(ok)
        harness.queue.add_task(bad)

        with harness.worker() as worker:
            harness.drain(worker)
            body = urllib.request.urlopen(f"http://127.0.0.1:{metrics.bound_port}/metrics", timeout=5).read()

    assert value("agentq_task_attempts_total", queue="general", outcome="completed") == done + 1
    assert value("agentq_task_attempts_total", queue="crashing", outcome="retried") == retried + 2
    assert value("agentq_task_attempts_total", queue="crashing", outcome="failed") == failed + 1
    assert value("agentq_tasks_active", queue="general") == 0
    assert value("agentq_task_duration_seconds_count", queue="general", outcome="completed") >= 1
    assert value("agentq_llm_tokens_total", provider="scripted", model="scripted-1", type="input") > tokens
    assert metrics.bound_port is not None and metrics.bound_port >= port
    assert b'agentq_queue_depth{queue="general",state="queued"} 0.0' in body
    assert isinstance(REGISTRY, CollectorRegistry)
