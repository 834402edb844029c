"""Prometheus metrics for workers (``AGENTQ_METRICS_PORT``; off by default).

Multi-process choice: **one endpoint per worker process**, no shared state. Each process
serves on the first free port from ``AGENTQ_METRICS_PORT`` (``dramatiq --processes 4`` on
port 9191 serves 9191-9194; the port is logged). Prometheus scrapes each (a port range or
service discovery) and ``sum()`` aggregates. We do not use prometheus-client's multiprocess
mode (it needs ``PROMETHEUS_MULTIPROC_DIR`` set before import and files cleaned between
runs) nor Dramatiq's ``Prometheus`` middleware (it forks an exposition process, CLI only).

Metrics (all prefixed ``agentq_``):

* ``queue_depth{queue, state}`` — ``queued`` (messages in Redis not yet acknowledged: waiting in
  their priority lanes, prefetched or running; ``HLEN`` of ``<queue>.msgs``) and ``delayed`` (the
  same for ``<queue>.DQ``), sampled at scrape time (cached 1 s);
* ``tasks_active{queue}`` — attempts running in this process;
* ``task_attempts_total{queue, outcome}`` — outcome is ``completed``, ``retried``,
  ``postponed``, ``failed`` (dead-lettered), ``cancelled``, ``lost`` or ``cut_off``;
* ``task_duration_seconds{queue, outcome}`` — claim to end of each attempt;
* ``task_postponements_total{queue, cause}`` — postponed attempts by cause: ``provider_429``, ``rpm``,
  ``tpm``, ``org_rpm``, ``org_tpm``, ``provider`` (paused or shrunk by the provider's headers),
  ``limiter_unavailable``, ``rate_limit`` (Dramatiq's limiters), ``other``;
* ``limit_capacity{bucket, unit}`` / ``limit_used{bucket, unit}`` (``requests``/``tokens`` per window and
  counting now), ``limit_in_flight{bucket}``, ``limit_waiting{bucket}`` (slots booked ahead),
  ``limit_paused_seconds{bucket}`` — each model and organization bucket used in the last hour, read from
  Redis at scrape time (cached 1 s; see :class:`LimitGauges`). Every process reports the same shared
  values: aggregate them with ``max()``, not ``sum()``;
* ``llm_tokens_total{provider, model, type}`` (``input``/``output``) and
  ``llm_cost_usd_total{provider, model}`` — from every model call (see :class:`LLMMetrics`);
* ``runs_resumed_total{queue}`` — attempts that went on after the completed steps of an earlier
  attempt at the same firing, and ``steps_replayed_total{queue, kind}`` (``llm``/``tool``) — the
  completed steps they did not repeat (counted by ``actors.step_ledger.StoreLedger``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
from dramatiq.common import dq_name
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from middleware.attempts import Attempt, AttemptRegistry
from middleware.failure_policy import postpone_cause
from orchestrator.hooks import OrchestratorHooks
from orchestrator.limits import BucketUsage, RedisLimiter
from orchestrator.messages import ModelRequest, ModelResponse
from orchestrator.pricing import PriceTable

logger = logging.getLogger("agentq.metrics")

#: The registry every agentq metric lives in (served by :class:`Metrics`).
REGISTRY = CollectorRegistry()
#: Ports tried above ``AGENTQ_METRICS_PORT`` before giving up (one per worker process).
PORT_SPAN = 64

TASKS_ACTIVE = Gauge("agentq_tasks_active", "Attempts running in this process", ["queue"], registry=REGISTRY)
TASK_ATTEMPTS = Counter(
    "agentq_task_attempts", "Attempts ended, by outcome", ["queue", "outcome"], registry=REGISTRY
)
TASK_DURATION = Histogram(
    "agentq_task_duration_seconds",
    "Attempt duration, claim to end",
    ["queue", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
TASK_POSTPONEMENTS = Counter(
    "agentq_task_postponements", "Attempts postponed, by cause", ["queue", "cause"], registry=REGISTRY
)
LLM_TOKENS = Counter(
    "agentq_llm_tokens", "Model tokens used", ["provider", "model", "type"], registry=REGISTRY
)
LLM_COST = Counter("agentq_llm_cost_usd", "Model cost in USD", ["provider", "model"], registry=REGISTRY)
RUNS_RESUMED = Counter(
    "agentq_runs_resumed",
    "Attempts resumed after an earlier attempt's completed steps",
    ["queue"],
    registry=REGISTRY,
)
STEPS_REPLAYED = Counter(
    "agentq_steps_replayed",
    "Completed steps a resumed attempt did not repeat (model calls not requested, tools not run)",
    ["queue", "kind"],
    registry=REGISTRY,
)


class QueueDepth(Collector):
    """``agentq_queue_depth`` from Redis (``HLEN`` of the payload hashes) when scraped, at most once a second.

    Waiting messages sit in per-priority lanes (``actors.broker.lanes``), so the payload hash, which holds
    every message until it is acknowledged, is the one cheap exact count per queue.
    """

    def __init__(self, broker: dramatiq.Broker, *, max_age_s: float = 1.0) -> None:
        self.broker = broker
        self.max_age_s = max_age_s
        self._sampled_at = 0.0
        self._depths: list[tuple[str, str, int]] = []

    def sample(self) -> list[tuple[str, str, int]]:
        if time.monotonic() - self._sampled_at < self.max_age_s:
            return self._depths
        queues = sorted(q for q in self.broker.get_declared_queues() if not q.endswith((".DQ", ".XQ")))
        client = getattr(self.broker, "client", None)
        depths: list[tuple[str, str, int]] = []
        if client is not None:
            namespace = getattr(self.broker, "namespace", "dramatiq")
            pipe = client.pipeline(transaction=False)
            for queue in queues:
                pipe.hlen(f"{namespace}:{queue}.msgs")
                pipe.hlen(f"{namespace}:{dq_name(queue)}.msgs")
            counts = pipe.execute()
            for index, queue in enumerate(queues):
                depths += [(queue, "queued", counts[2 * index]), (queue, "delayed", counts[2 * index + 1])]
        else:  # StubBroker (tests)
            stub_queues: dict[str, Any] = getattr(self.broker, "queues", {})
            for queue in queues:
                depths.append((queue, "queued", stub_queues[queue].qsize() if queue in stub_queues else 0))
                delayed = stub_queues.get(dq_name(queue))
                depths.append((queue, "delayed", delayed.qsize() if delayed is not None else 0))
        self._depths, self._sampled_at = depths, time.monotonic()
        return depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "agentq_queue_depth", "Messages in Redis per queue", labels=["queue", "state"]
        )
        try:
            for queue, state, depth in self.sample():
                family.add_metric([queue, state], depth)
        except Exception as exc:  # a scrape must not fail because Redis is down
            logger.warning("Queue depth unavailable: %s", exc)
        yield family


class LimitGauges(Collector):
    """The model-call limiter's buckets (``agentq_limit_*``), read from Redis when scraped, at most once
    a second.

    Shared state: every worker process reports the same values (aggregate with ``max()``). Nothing is
    reported until a limiter is watched (``AGENTQ_PROVIDER_LIMITS_JSON``, ``AGENTQ_ORG_TPM`` or
    ``AGENTQ_ORG_LIMITS_JSON`` set).
    """

    def __init__(self, *, max_age_s: float = 1.0) -> None:
        self.max_age_s = max_age_s
        self._limiter: RedisLimiter | None = None
        self._sampled_at = 0.0
        self._usage: list[BucketUsage] = []

    def watch(self, limiter: RedisLimiter | None) -> None:
        """Report ``limiter``'s buckets from now on (None: none)."""
        self._limiter, self._sampled_at = limiter, 0.0

    def sample(self) -> list[BucketUsage]:
        if self._limiter is None:
            return []
        if time.monotonic() - self._sampled_at >= self.max_age_s:
            self._usage, self._sampled_at = self._limiter.usage(), time.monotonic()
        return self._usage

    def collect(self) -> Iterator[GaugeMetricFamily]:
        capacity = GaugeMetricFamily(
            "agentq_limit_capacity",
            "Requests or tokens a bucket allows per window",
            labels=["bucket", "unit"],
        )
        used = GaugeMetricFamily(
            "agentq_limit_used",
            "Requests or tokens counting in a bucket's window now",
            labels=["bucket", "unit"],
        )
        in_flight = GaugeMetricFamily("agentq_limit_in_flight", "Model calls in flight", labels=["bucket"])
        waiting = GaugeMetricFamily(
            "agentq_limit_waiting", "Slots booked ahead for waiting calls", labels=["bucket"]
        )
        paused = GaugeMetricFamily(
            "agentq_limit_paused_seconds", "How long the provider paused the bucket for", labels=["bucket"]
        )
        try:
            rows = self.sample()
        except Exception as exc:  # a scrape must not fail because Redis is down
            logger.warning("Provider limit buckets unavailable: %s", exc)
            rows = []
        for row in rows:
            for unit, cap, now in (
                ("requests", row.requests_capacity, row.requests_used),
                ("tokens", row.tokens_capacity, row.tokens_used),
            ):
                if cap:
                    capacity.add_metric([row.name, unit], cap)
                used.add_metric([row.name, unit], now)
            in_flight.add_metric([row.name], row.in_flight)
            waiting.add_metric([row.name], row.waiting)
            paused.add_metric([row.name], row.paused_ms / 1000)
        yield from (capacity, used, in_flight, waiting, paused)


#: The process's limiter gauges (``build_orchestrator`` watches the limiter when metrics are on).
LIMIT_GAUGES = LimitGauges()
REGISTRY.register(LIMIT_GAUGES)


class Metrics(dramatiq.Middleware):
    """Serves :data:`REGISTRY` from each worker process and counts attempts (an ``AttemptObserver``)."""

    def __init__(self, port: int, attempts: AttemptRegistry, *, host: str = "0.0.0.0") -> None:
        self.port = port
        self.host = host
        self.bound_port: int | None = None
        self._collector: QueueDepth | None = None
        attempts.observe(self)

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        if self._collector is None:
            self._collector = QueueDepth(broker)
            REGISTRY.register(self._collector)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        for port in range(self.port, self.port + PORT_SPAN):
            try:
                start_http_server(port, addr=self.host, registry=REGISTRY)
            except OSError:
                continue
            self.bound_port = port
            logger.info("Serving Prometheus metrics on port %s", port)
            return
        logger.error("No free port for Prometheus metrics in %s-%s", self.port, self.port + PORT_SPAN - 1)

    def attempt_started(self, attempt: Attempt) -> None:
        TASKS_ACTIVE.labels(_queue(attempt)).inc()

    def attempt_handed_off(self, attempt: Attempt, run: object) -> None:
        """Nothing to count: the attempt stays active until it ends."""

    def attempt_ended(self, attempt: Attempt, outcome: str, error: BaseException | None) -> None:
        queue = _queue(attempt)
        TASKS_ACTIVE.labels(queue).dec()
        TASK_ATTEMPTS.labels(queue, outcome).inc()
        TASK_DURATION.labels(queue, outcome).observe(time.monotonic() - attempt.started)
        if outcome == "postponed":
            TASK_POSTPONEMENTS.labels(queue, postpone_cause(error)).inc()


def _queue(attempt: Attempt) -> str:
    agent = attempt.claim.agent
    return agent.kind if agent is not None else "unknown"


class LLMMetrics(OrchestratorHooks):
    """Counts tokens and cost of every model call, by provider and model."""

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices

    def on_llm_end(
        self,
        request: ModelRequest,
        response: ModelResponse | None,
        error: BaseException | None,
        *,
        provider: str,
    ) -> None:
        if response is None:
            return
        model = response.model or request.model
        LLM_TOKENS.labels(provider, model, "input").inc(response.usage.input_tokens)
        LLM_TOKENS.labels(provider, model, "output").inc(response.usage.output_tokens)
        cost = self.prices.cost(model, response.usage)
        if cost is not None:
            LLM_COST.labels(provider, model).inc(float(cost))


__all__ = [
    "LIMIT_GAUGES",
    "REGISTRY",
    "RUNS_RESUMED",
    "STEPS_REPLAYED",
    "LLMMetrics",
    "LimitGauges",
    "Metrics",
    "QueueDepth",
]
