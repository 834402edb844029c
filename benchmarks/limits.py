"""What provider limits cost per model call, and throughput with limits configured but never reached vs off.

Run from the repository root::

    python -m benchmarks.limits              # 4,000 calls per side; 1,000 tasks x 3 repeats
    python -m benchmarks.limits --quick      # 1,000 calls; 300 tasks x 1

1. **Per call** (in this process): :class:`~orchestrator.Orchestrator` runs one-call agents on the
   ``scripted`` provider (no latency), without a limiter and with the
   :class:`~orchestrator.limits.RedisLimiter` (a model bucket, and a model bucket plus an organization
   quota, both far from full), in interleaved blocks so machine noise hits every side alike. The
   difference of the medians is the limiter's cost per call: its reserve and settle scripts (two Redis
   round trips) and the token estimate. Also with 8 threads calling at once.
2. **Throughput** (``dramatiq actors``, 1 process x 8 threads): tasks whose agent calls the fast fake
   OpenAI server (``tests.fakes.fast_openai_server``, no delay) through the SDK, drained with limits off
   and on (``AGENTQ_PROVIDER_LIMITS_JSON`` and ``AGENTQ_ORG_TPM`` set, never reached), interleaved. A
   call without latency is the worst case for the ratio (target ≥ 0.95): a real model call takes
   hundreds of milliseconds.

Uses Redis db 10 (``--redis-url`` / ``BENCH_REDIS_URL``; flushed) and a Postgres database it creates
and drops. Prints the results and writes ``benchmarks/results/limits-latest.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from psycopg import sql

from benchmarks.pipeline import DB_PREFIX, DEFAULT_PG_ADMIN_URL, ROOT, Bench, _admin, _database_url
from benchmarks.summary import Figure, rate

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"
OUTPUT = ROOT / "benchmarks" / "results" / "limits-latest.md"
ORG = "00000000-0000-4000-8000-00000000be17"
PROCESSES, THREADS = 1, 8
#: Limits far above what a run reaches (a minute's window, as configured in production).
NEVER_REACHED = {"rpm": 10_000_000, "tpm": 10_000_000_000}
BLOCK = 250


@dataclass(frozen=True)
class CallCost:
    """Microseconds per model call, per side, over interleaved blocks: wall time, and this process's CPU."""

    calls: int
    off: list[float]
    model: list[float]
    model_and_org: list[float]
    cpu: dict[str, list[float]]
    threaded_off: float
    threaded_on: float

    def overhead(self, side: list[float]) -> float:
        return statistics.median(side) - statistics.median(self.off)

    def cpu_overhead(self, side: str) -> float:
        return statistics.median(self.cpu[side]) - statistics.median(self.cpu["off"])


def _orchestrators(client: redis.Redis) -> dict[str, object]:
    from config.rate_limits import RateLimit
    from orchestrator import Orchestrator, ProviderRegistry, ScriptedProvider
    from orchestrator.limits import LimitPolicy, RedisLimiter

    limit = RateLimit(rpm=NEVER_REACHED["rpm"], tpm=NEVER_REACHED["tpm"])

    def build(policy: LimitPolicy | None) -> Orchestrator:
        limiter = RedisLimiter(client, policy) if policy is not None else None
        return Orchestrator(ProviderRegistry({"scripted": ScriptedProvider}), limiter=limiter)

    return {
        "off": build(None),
        "model": build(LimitPolicy({"scripted:*": limit})),
        "model_and_org": build(LimitPolicy({"scripted:*": limit}, org_tpm=NEVER_REACHED["tpm"])),
    }


def _block(orchestrator: object, calls: int, prefix: str) -> tuple[float, float]:
    """Seconds per run of ``calls`` one-call runs: wall time, and this process's CPU time."""
    from orchestrator import AgentSpec, Orchestrator, TaskInput

    assert isinstance(orchestrator, Orchestrator)
    agent = AgentSpec(id="a", name="bench", provider="scripted", model="scripted-1", max_tokens=100)
    context = {"script": [{"answer": "done"}]}
    started, cpu = time.perf_counter(), time.process_time()
    for index in range(calls):
        orchestrator.run(
            agent, TaskInput(id=f"{prefix}{index}", title="t", context=context, organization_id=ORG)
        )
    return (time.perf_counter() - started) / calls, (time.process_time() - cpu) / calls


def per_call(client: redis.Redis, calls: int) -> CallCost:
    """Interleaved blocks of one-call runs: off, model bucket, model + organization buckets."""
    client.flushdb()
    sides = _orchestrators(client)
    for name, orchestrator in sides.items():  # warm up: imports, script loading
        _block(orchestrator, 50, f"warm-{name}-")
    results: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(calls // BLOCK):
        for name, orchestrator in sides.items():
            wall, used = _block(orchestrator, BLOCK, f"{name}-{repeat}-")
            results[name].append(wall * 1e6)
            cpu[name].append(used * 1e6)
    threaded = {name: _threaded(sides[name], calls // 2) for name in ("off", "model")}
    return CallCost(
        calls, results["off"], results["model"], results["model_and_org"], cpu, *threaded.values()
    )


def _threaded(orchestrator: object, calls: int) -> float:
    """Microseconds per call (wall) with 8 threads calling at once."""
    per_thread = calls // THREADS
    prefix = secrets.token_hex(3)
    threads = [
        threading.Thread(target=_block, args=(orchestrator, per_thread, f"{prefix}-{index}-"))
        for index in range(THREADS)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - started) / (per_thread * THREADS) * 1e6


@dataclass(frozen=True)
class Throughput:
    tasks: int
    off: list[float]
    on: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.on) / statistics.median(self.off)


def throughput(redis_url: str, pg_admin_url: str, tasks: int, repeats: int) -> Throughput:
    """Drains of ``tasks`` OpenAI tasks (fast fake server) with limits off and on, interleaved."""
    from tests.fakes.fast_openai_server import FastOpenAIServer

    db_name = f"{DB_PREFIX}{secrets.token_hex(4)}"
    database_url = _database_url(pg_admin_url, db_name)
    log_dir = Path(tempfile.mkdtemp(prefix="agentq-bench-limits-"))
    redis_client = redis.Redis.from_url(redis_url)
    _admin(pg_admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    runs: dict[str, list[float]] = {"off": [], "on": []}
    try:
        with FastOpenAIServer() as server:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENTQ_"))},
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                "REDIS_URL": redis_url,
                "DATABASE_URL": database_url,
                "QUEUE_CONCURRENCY": str(THREADS),
                "AGENTQ_RATE_LIMIT_MAX": "0",
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": server.base_url,
            }
            os.environ.update(env)
            from actors import runtime
            from taskstore import NewAgent, utcnow

            store = runtime.store
            store.migrate()
            agent = store.create_agent(
                NewAgent(
                    provider="openai", model="gpt-4o-mini", organization_id=ORG, name="bench", max_tokens=100
                ),
                now=utcnow(),
            )
            variants = {
                "off": env,
                "on": {
                    **env,
                    "AGENTQ_PROVIDER_LIMITS_JSON": json.dumps({"openai:gpt-4o-mini": NEVER_REACHED}),
                    "AGENTQ_ORG_TPM": str(NEVER_REACHED["tpm"]),
                },
            }
            for repeat in range(1, repeats + 1):
                for name, variant in variants.items():
                    bench = Bench(
                        redis_client, database_url, runtime.queue, store, agent.id, ORG, variant, log_dir
                    )
                    result = bench.run_pipeline(PROCESSES, THREADS, tasks)
                    runs[name].append(result.throughput)
                    print(f"repeat {repeat} limits {name}: {result.throughput:.1f} tasks/s", file=sys.stderr)
            store.close()
    finally:
        redis_client.flushdb()
        _admin(
            pg_admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name))
        )
    return Throughput(tasks, runs["off"], runs["on"])


def figures(cost: CallCost, drained: Throughput) -> list[Figure]:
    return [
        Figure(
            "provider limits",
            "per model call: model bucket (+ organization quota)",
            f"+{cost.overhead(cost.model):.0f} µs (+{cost.overhead(cost.model_and_org):.0f} µs)",
            f"one-call run without limits {statistics.median(cost.off):.0f} µs",
            "(information)",
            None,
        ),
        Figure(
            "provider limits",
            f"{PROCESSES} x {THREADS}, {drained.tasks:,} OpenAI tasks (fake server, no latency),"
            " limits never reached",
            rate(statistics.median(drained.on)),
            f"limits off {rate(statistics.median(drained.off))}: ratio {drained.ratio:.2f}",
            "≥ 0.95 of off",
            drained.ratio >= 0.95,
        ),
    ]


def render(cost: CallCost, drained: Throughput, redis_url: str) -> str:
    def runs(values: list[float]) -> str:
        return ", ".join(f"{value:.0f}" for value in values)

    return "\n".join(
        [
            "# Provider limits: cost per model call and throughput, limits never reached vs off",
            "",
            f"Redis {redis_url.rsplit('@', 1)[-1]}; {cost.calls:,} one-call runs per side"
            f" in blocks of {BLOCK}",
            "",
            "| side | µs per one-call run (median of blocks) | overhead per call | blocks |",
            "|---|---|---|---|",
            f"| no limiter | {statistics.median(cost.off):.0f} | — | {runs(cost.off)} |",
            f"| model bucket | {statistics.median(cost.model):.0f} | +{cost.overhead(cost.model):.0f} µs |"
            f" {runs(cost.model)} |",
            f"| model bucket + organization quota | {statistics.median(cost.model_and_org):.0f} |"
            f" +{cost.overhead(cost.model_and_org):.0f} µs | {runs(cost.model_and_org)} |",
            "",
            "CPU of this process per call (the Python side; Redis runs the scripts in its own process):"
            f" +{cost.cpu_overhead('model'):.0f} µs with the model bucket,"
            f" +{cost.cpu_overhead('model_and_org'):.0f} µs with the organization quota too"
            f" (no limiter: {statistics.median(cost.cpu['off']):.0f} µs).",
            "",
            f"8 threads at once: {cost.threaded_off:.0f} µs per call without limiter,"
            f" {cost.threaded_on:.0f} µs with the model bucket (wall time / calls).",
            "",
            f"`dramatiq actors` {PROCESSES} x {THREADS}, {drained.tasks:,} tasks calling the fast fake"
            " OpenAI server:"
            f" off {statistics.median(drained.off):.1f} tasks/s (runs {runs(drained.off)}),"
            f" on {statistics.median(drained.on):.1f} tasks/s (runs {runs(drained.on)}):"
            f" **ratio {drained.ratio:.3f}** (target ≥ 0.95).",
            "",
        ]
    )


def run(args: argparse.Namespace) -> tuple[CallCost, Throughput]:
    """Both measurements, with ``args`` from :func:`parse`; writes the report to ``args.output``."""
    calls = args.calls or (1000 if args.quick else 4000)
    tasks = args.tasks or (300 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    client = redis.Redis.from_url(args.redis_url)
    cost = per_call(client, calls)
    client.flushdb()
    drained = throughput(args.redis_url, args.pg_admin_url, tasks, repeats)
    report = render(cost, drained, args.redis_url)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    print(report)
    return cost, drained


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limits")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    run(parse(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
