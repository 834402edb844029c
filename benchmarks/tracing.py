"""Pipeline throughput with tracing exporting to a local OTLP receiver vs tracing off, side by side.

Run from the repository root::

    python -m benchmarks.tracing              # N=1000, 3 repeats, 1 process x 8 threads
    python -m benchmarks.tracing --quick      # N=300, 1 repeat
    python -m benchmarks.tracing --tasks 10000 --sdk-encoder   # also the SDK's own OTLP encoder

Each repeat drains N tasks through ``dramatiq actors`` (full middleware stack, Postgres,
``scripted`` provider) interleaved: **off** (no ``OTEL_*``: the API's no-op tracer), **on**
(``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at :class:`tests.fakes.otlp_receiver.OTLPReceiver`
in this process, every trace exported; the worker makes 3 spans per task: process,
invoke_agent, chat — the producer here exports nothing) and, with ``--sdk-encoder``, on with
``AGENTQ_TRACE_ENCODER=sdk``. The ratio of median throughputs is the figure of merit (target
≥ 0.85); worker CPU per task (from ``/proc``) is printed too, steadier on a shared machine.
Also times the no-op tracer path of one message's hooks (micro-benchmark).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path

import redis
from psycopg import sql

from benchmarks.pipeline import (
    DB_PREFIX,
    DEFAULT_PG_ADMIN_URL,
    DEFAULT_REDIS_URL,
    ROOT,
    Bench,
    _admin,
    _database_url,
)
from benchmarks.summary import Figure, rate

PROCESSES, THREADS = 1, 8


def noop_overhead_us(iterations: int = 20_000) -> float:
    """Microseconds the Tracing hooks add per message (publish + process) with the no-op tracer."""
    import dramatiq
    from dramatiq import Message
    from dramatiq.brokers.stub import StubBroker

    from middleware.tracing import Tracing

    broker = StubBroker(middleware=[])
    broker.declare_actor(
        dramatiq.Actor(lambda: None, broker=broker, actor_name="a", queue_name="q", priority=0, options={})
    )
    tracing = Tracing()
    tracing._set_up = True

    def one() -> None:
        message: Message[None] = Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
        tracing.before_enqueue(broker, message, None)
        tracing.after_enqueue(broker, message, None)
        tracing.before_process_message(broker, message)  # type: ignore[arg-type]
        tracing.after_process_message(broker, message)  # type: ignore[arg-type]

    baseline = min(
        timeit.repeat(
            lambda: Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}),
            number=iterations,
            repeat=3,
        )
    )
    traced = min(timeit.repeat(one, number=iterations, repeat=3))
    return (traced - baseline) / iterations * 1e6


@dataclass(frozen=True)
class TracingResult:
    """Throughput of each run with tracing off and on, and the spans the receiver got."""

    tasks: int
    off: list[float]
    on: list[float]
    spans: int
    #: Throughput with tracing exporting a sampled share of traces (``sample_ratio``), if measured.
    sampled: list[float] = field(default_factory=list)
    sample_ratio: float | None = None
    #: Worker-process CPU milliseconds per task of each run, by variant (off, on, sampled, sdk).
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    #: Throughput exporting every trace with the SDK's encoder (``AGENTQ_TRACE_ENCODER=sdk``), if measured.
    sdk: list[float] = field(default_factory=list)
    #: Throughput of each ``--variant``, by name.
    extra: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return statistics.median(self.on) / statistics.median(self.off)


def _cpu_note(result: TracingResult) -> str:
    on, off = result.cpu_ms.get("on"), result.cpu_ms.get("off")
    if not on or not off:
        return ""
    return f"; worker CPU {statistics.median(on):.2f} vs {statistics.median(off):.2f} ms/task"


def figures(result: TracingResult) -> list[Figure]:
    """Throughput with tracing exporting over throughput with it off (target 0.85)."""
    on, off = statistics.median(result.on), statistics.median(result.off)
    return [
        Figure(
            "tracing overhead",
            f"{PROCESSES} x {THREADS}, {result.tasks:,} tasks, exporting over OTLP/HTTP",
            rate(on),
            f"tracing off {rate(off)}: ratio {result.ratio:.2f}{_cpu_note(result)}",
            "≥ 0.85 of off",
            result.ratio >= 0.85,
        ),
        *(
            [
                Figure(
                    "tracing overhead",
                    f"same, {result.sample_ratio:.0%} of traces sampled (`OTEL_TRACES_SAMPLER`)",
                    rate(statistics.median(result.sampled)),
                    f"tracing off {rate(off)}: ratio {statistics.median(result.sampled) / off:.2f}",
                    "(sampling: information only)",
                    None,
                )
            ]
            if result.sampled and result.sample_ratio is not None
            else []
        ),
    ]


def _variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:KEY=VALUE,KEY=VALUE`` → (NAME, {KEY: VALUE}); a malformed one is named in the error."""
    name, _, assignments = text.partition(":")
    pairs = [item.partition("=") for item in assignments.split(",") if item]
    if not name or not pairs or any(not key or not sep for key, sep, _ in pairs):
        raise SystemExit(f"--variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE…]")
    return name, {key: value for key, _, value in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing")
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--sample-ratio", type=float, default=None, help="also run with this share of traces sampled"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE…]",
        help="also run exporting with these extra environment variables, interleaved (repeatable)",
    )
    parser.add_argument(
        "--sdk-encoder",
        action="store_true",
        help="also run exporting with the SDK's own encoder (AGENTQ_TRACE_ENCODER=sdk), interleaved",
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL))
    args = parser.parse_args(argv)
    tasks = args.tasks or (300 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    print(f"no-op tracer: {noop_overhead_us():.2f} µs per message (publish + process hooks)")
    result = run(
        tasks,
        repeats,
        redis_url=args.redis_url,
        pg_admin_url=args.pg_admin_url,
        sample_ratio=args.sample_ratio,
        sdk_encoder=args.sdk_encoder,
        extra=dict(_variant(text) for text in args.variant),
    )
    off, on = statistics.median(result.off), statistics.median(result.on)
    print(f"{PROCESSES}x{THREADS}, N={tasks}, repeats={repeats}")
    print(f"tracing off: {off:.1f} tasks/s  (runs: {', '.join(f'{v:.1f}' for v in result.off)})")
    print(f"tracing on:  {on:.1f} tasks/s  (runs: {', '.join(f'{v:.1f}' for v in result.on)})")
    print(f"ratio on/off: {result.ratio:.3f}  (target >= 0.85); spans received: {result.spans}")
    ratios = [on_run / off_run for off_run, on_run in zip(result.off, result.on, strict=True)]
    print(f"per-pair ratios: {', '.join(f'{r:.3f}' for r in ratios)}")
    for name, values in result.cpu_ms.items():
        if values:
            print(
                f"worker CPU ms/task {name}: median {statistics.median(values):.3f}"
                f" (runs: {', '.join(f'{v:.3f}' for v in values)})"
            )
    if result.sampled:
        print(f"sampled {args.sample_ratio}: {statistics.median(result.sampled) / off:.3f} of off")
    if result.sdk:
        sdk = statistics.median(result.sdk)
        print(
            f"tracing on, SDK encoder: {sdk:.1f} tasks/s  (runs: {', '.join(f'{v:.1f}' for v in result.sdk)})"
        )
        print(f"ratio SDK encoder/off: {sdk / off:.3f}")
    for name, runs in result.extra.items():
        median = statistics.median(runs)
        listed = ", ".join(f"{v:.1f}" for v in runs)
        print(f"{name}: {median:.1f} tasks/s, ratio {median / off:.3f} (runs: {listed})")
    return 0


def run(
    tasks: int,
    repeats: int,
    *,
    redis_url: str = DEFAULT_REDIS_URL,
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL,
    sample_ratio: float | None = None,
    sdk_encoder: bool = False,
    extra: dict[str, dict[str, str]] | None = None,
) -> TracingResult:
    """``repeats`` interleaved pairs of drains of ``tasks`` tasks, tracing off then on."""
    from tests.fakes.otlp_receiver import OTLPReceiver

    db_name = f"{DB_PREFIX}{secrets.token_hex(4)}"
    database_url = _database_url(pg_admin_url, db_name)
    log_dir = Path(tempfile.mkdtemp(prefix="agentq-bench-tracing-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "QUEUE_CONCURRENCY": str(THREADS),
        # Throughput is measured without the start rate limit (its default is 100 a minute).
        "AGENTQ_RATE_LIMIT_MAX": "0",
        "AGENTQ_ALLOW_SCRIPTED": "true",
    }
    os.environ.update(env)
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[key]
    redis_client = redis.Redis.from_url(redis_url)
    _admin(pg_admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    throughput: dict[str, list[float]] = {"off": [], "on": [], "sampled": [], "sdk": []}
    cpu_ms: dict[str, list[float]] = {"off": [], "on": [], "sampled": [], "sdk": []}
    try:
        from actors import runtime
        from taskstore import NewAgent, utcnow

        store = runtime.store
        store.migrate()
        org = "00000000-0000-4000-8000-00000000be00"
        agent = store.create_agent(
            NewAgent(
                provider="scripted", model="scripted-1", organization_id=org, name="bench", kind="general"
            ),
            now=utcnow(),
        )
        with OTLPReceiver() as receiver:
            exporting = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
            variants = {"off": env, "on": exporting}
            if sdk_encoder:
                variants["sdk"] = {**exporting, "AGENTQ_TRACE_ENCODER": "sdk"}
            for name, extra_env in (extra or {}).items():
                variants[name] = {**exporting, **extra_env}
                throughput[name], cpu_ms[name] = [], []
            if sample_ratio is not None:
                variants["sampled"] = {
                    **exporting,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": str(sample_ratio),
                }
            for repeat in range(1, repeats + 1):
                for name, variant_env in variants.items():
                    bench = Bench(
                        redis_client, database_url, runtime.queue, store, agent.id, org, variant_env, log_dir
                    )
                    result = bench.run_pipeline(PROCESSES, THREADS, tasks)
                    throughput[name].append(result.throughput)
                    if result.worker_cpu_ms is not None:
                        cpu_ms[name].append(result.worker_cpu_ms)
                    print(
                        f"repeat {repeat} tracing {name}: {result.throughput:.1f} tasks/s,"
                        f" {result.drain_s:.1f} s,"
                        f" worker CPU {result.worker_cpu_ms or float('nan'):.3f} ms/task",
                        file=sys.stderr,
                    )
            time.sleep(1)  # let the last batch arrive before counting
            spans = len(receiver.spans())
        store.close()
    finally:
        redis_client.flushdb()
        _admin(
            pg_admin_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name)),
        )
    return TracingResult(
        tasks,
        throughput["off"],
        throughput["on"],
        spans,
        throughput["sampled"],
        sample_ratio,
        cpu_ms,
        throughput["sdk"],
        {name: throughput[name] for name in extra or {}},
    )


if __name__ == "__main__":
    sys.exit(main())
