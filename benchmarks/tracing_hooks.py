"""CPU per task of the tracing work alone, split into span creation, encoding and the HTTP export.

Run from the repository root::

    python -m benchmarks.tracing_hooks                 # 20,000 tasks, 3 rounds
    python -m benchmarks.tracing_hooks --tasks 5000 --rounds 1

Each measurement is a fresh interpreter that calls, per task, exactly the tracing hooks a worker
calls for a one-model-call task — ``Tracing.before_process_message``, ``attempt_started``,
``TracingHooks.on_run_start``/``on_llm_start``/``on_llm_end``/``on_run_end``,
``attempt_ended``, ``after_process_message``: three spans — with a ``BatchSpanProcessor`` whose
exporter is one of:

* ``off``: no tracer provider (the no-op path);
* ``null``: drops the batch (span creation and the batch processor only);
* ``encode`` / ``sdk-encode``: encodes the batch (agentq's encoder / the SDK's) and drops it;
* ``direct`` / ``sdk``: the real OTLP/HTTP exporters, posting to a local OTLP receiver that runs
  in this (parent) process, so its CPU is not counted.

CPU is ``time.process_time()`` of the measured process (every thread: the batch processor's
too) over the run, after a warm-up, divided by the tasks; the cyclic garbage collector's share is
timed with ``gc.callbacks``. ``--heap N`` keeps N extra live objects, as a worker's heap would.
The rounds are interleaved; the table shows medians.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from benchmarks.pipeline import ROOT

VARIANTS = ("off", "null", "encode", "sdk-encode", "direct", "sdk")


def _exporter(variant: str) -> Any:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from config.otlp_encoding import encode_spans
    from config.otlp_exporter import DirectOTLPSpanExporter

    class Calls(SpanExporter):
        def __init__(self, call: Callable[[Sequence[ReadableSpan]], object]) -> None:
            self.call = call

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.call(spans)
            return SpanExportResult.SUCCESS

    if variant == "direct":
        return DirectOTLPSpanExporter()
    if variant == "sdk":
        return OTLPSpanExporter()
    if variant == "encode":
        return Calls(encode_spans)
    if variant == "sdk-encode":
        return Calls(lambda spans: sdk_encode(spans).SerializePartialToString())
    return Calls(lambda spans: None)


def measure(variant: str, tasks: int, heap: int) -> dict[str, float]:
    """In this process: CPU and GC microseconds per task of the tracing hooks with ``variant``."""
    import dramatiq
    from dramatiq import Message
    from dramatiq.brokers.stub import StubBroker
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from middleware.tracing import Tracing
    from orchestrator.tracing import TracingHooks

    broker = StubBroker(middleware=[])
    broker.declare_actor(
        dramatiq.Actor(
            lambda task_id: None,
            broker=broker,
            actor_name="general_agent",
            queue_name="general",
            priority=0,
            options={},
        )
    )
    provider = None
    if variant != "off":
        provider = TracerProvider(resource=Resource.create({"service.name": "agentq"}))
        provider.add_span_processor(BatchSpanProcessor(_exporter(variant)))
    tracing = Tracing(tracer_provider=provider)
    tracing._set_up = True
    hooks = TracingHooks(tracer_provider=provider)
    ids = "00000000-0000-4000-8000-0000000000"
    task: Any = SimpleNamespace(id=ids + "01", agent_id=ids + "02", organization_id=ids + "03", attempts=1)
    agent: Any = SimpleNamespace(
        name="bench", id=task.agent_id, provider="scripted", model="scripted-1", system_prompt=""
    )
    attempt: Any = SimpleNamespace(claim=SimpleNamespace(task=task, agent=SimpleNamespace(kind="general")))
    request: Any = SimpleNamespace(model="scripted-1", temperature=None, max_tokens=None, messages=())
    usage = SimpleNamespace(input_tokens=12, output_tokens=5)
    response: Any = SimpleNamespace(model="scripted-1", usage=usage, finish_reason="stop", tool_calls=())
    result: Any = SimpleNamespace(model="scripted-1", usage=usage, turns=1, cost_usd=None)

    def one() -> None:
        message: Message[Any] = Message(
            queue_name="general", actor_name="general_agent", args=(task.id,), kwargs={}, options={}
        )
        tracing.before_process_message(broker, message)  # type: ignore[arg-type]
        tracing.attempt_started(attempt)
        hooks.on_run_start(agent, task)
        hooks.on_llm_start(request, provider="scripted")
        hooks.on_llm_end(request, response, None, provider="scripted")
        hooks.on_run_end(result, None)
        tracing.attempt_ended(attempt, "completed", None)
        tracing.after_process_message(broker, message)  # type: ignore[arg-type]

    ballast = [{"i": [index]} for index in range(heap)]
    gc_s = [0.0, 0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_s[1] = time.perf_counter()
        else:
            gc_s[0] += time.perf_counter() - gc_s[1]

    for _ in range(min(tasks, 1000)):
        one()
    if provider is not None:
        provider.force_flush()
    gc.callbacks.append(timed)
    gc_s[0] = 0.0
    started = time.process_time()
    for _ in range(tasks):
        one()
    if provider is not None:
        provider.force_flush()
    cpu_s = time.process_time() - started
    gc.callbacks.remove(timed)
    if provider is not None:
        provider.shutdown()
    del ballast
    return {"cpu_us": cpu_s / tasks * 1e6, "gc_us": gc_s[0] / tasks * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing_hooks")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heap", type=int, default=300_000, help="extra live objects (a worker's heap)")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.tasks, args.heap)))
        return 0
    from tests.fakes.otlp_receiver import OTLPReceiver

    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    with OTLPReceiver() as receiver:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            # Large enough that no span is dropped when the hooks outrun the export.
            "OTEL_BSP_MAX_QUEUE_SIZE": str(4 * args.tasks),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        for round_ in range(1, args.rounds + 1):
            for variant in VARIANTS:
                command = [sys.executable, "-m", "benchmarks.tracing_hooks", "--one", variant]
                command += ["--tasks", str(args.tasks), "--heap", str(args.heap)]
                done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
                runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"round {round_} {variant}: {runs[variant][-1]}", file=sys.stderr)
    cpu = {variant: statistics.median(run["cpu_us"] for run in runs[variant]) for variant in VARIANTS}
    gc_us = {variant: statistics.median(run["gc_us"] for run in runs[variant]) for variant in VARIANTS}
    print(
        f"{args.tasks:,} tasks x 3 spans, {args.rounds} rounds, heap +{args.heap:,} objects;"
        " µs per task (median)"
    )
    print("| exporter | CPU µs/task | of which GC |")
    print("|---|---|---|")
    for variant in VARIANTS:
        print(f"| {variant} | {cpu[variant]:.0f} | {gc_us[variant]:.0f} |")
    print(
        f"span creation + batch processor {cpu['null'] - cpu['off']:.0f}; encoding: agentq"
        f" {cpu['encode'] - cpu['null']:.0f}, SDK {cpu['sdk-encode'] - cpu['null']:.0f};"
        f" HTTP {cpu['direct'] - cpu['encode']:.0f} (SDK exporter {cpu['sdk'] - cpu['sdk-encode']:.0f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
