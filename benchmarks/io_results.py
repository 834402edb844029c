"""The I/O-bound benchmark's results: a case, what its floor and worker runs measured, the report.

See :mod:`benchmarks.io_bound` for how they are measured. :func:`render` writes the results file;
:func:`figures` gives the suite's rows (issue #19's targets, :data:`MIN_RATIO`,
:data:`MAX_RSS_MB`, :data:`MAX_CPU_RATIO`).
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from benchmarks.io_floor import FloorResult
from benchmarks.summary import Figure

#: Targets (issue #19): the worker's throughput over the floor's, peak RSS per process, CPU ratio.
MIN_RATIO, MAX_RSS_MB, MAX_CPU_RATIO = 0.8, 300.0, 1.5


@dataclass(frozen=True)
class Case:
    """``tasks`` runs whose one model call takes ``latency_s``, ``concurrency`` of them in flight."""

    tasks: int
    latency_s: float
    concurrency: int

    @property
    def name(self) -> str:
        return f"{self.tasks:,} runs of {self.latency_s:g} s"

    @property
    def ideal(self) -> float:
        """Calls per second if every call took exactly the latency and nothing else took time."""
        return self.concurrency / self.latency_s


@dataclass(frozen=True)
class WorkerRun:
    """What one worker run measured (see the module docstring)."""

    tasks_per_s: float
    warm_up_s: float
    peak_rss_mb: float
    peak_tree_rss_mb: float
    cpu_ms_per_task: float | None
    run_p50_s: float
    server_max_in_flight: int
    server_connections: int
    max_pg_connections: int


def _median(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


@dataclass
class CaseResult:
    """Every repeat of one case: the floor's and the worker's runs, in the order they ran."""

    case: Case
    threads: int
    floors: list[FloorResult] = field(default_factory=list)
    floor_in_flight: list[int] = field(default_factory=list)
    workers: list[WorkerRun] = field(default_factory=list)

    def ratios(self) -> list[float]:
        """Worker tasks/s over the floor's calls/s, per repeat."""
        return [w.tasks_per_s / f.calls_per_s for f, w in zip(self.floors, self.workers, strict=True)]

    def cpu_ratios(self) -> list[float | None]:
        """Worker CPU per task over the floor's per call, per repeat."""
        return [
            None if w.cpu_ms_per_task is None else w.cpu_ms_per_task / f.cpu_ms_per_call
            for f, w in zip(self.floors, self.workers, strict=True)
        ]

    def peak_rss_mb(self) -> float:
        """The largest worker process's peak over every repeat."""
        return max(w.peak_rss_mb for w in self.workers)

    def met(self) -> bool:
        """Every target of issue #19, on the medians (RSS: the largest peak)."""
        ratio, cpu_ratio = _median(self.ratios()), _median(self.cpu_ratios())
        return (
            ratio is not None
            and ratio >= MIN_RATIO
            and self.peak_rss_mb() <= MAX_RSS_MB
            and cpu_ratio is not None
            and cpu_ratio <= MAX_CPU_RATIO
        )


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _spread(values: Sequence[float | None], digits: int) -> str:
    """The median and, with more than one value, the range."""
    known = [value for value in values if value is not None]
    if not known:
        return "-"
    text = _fmt(statistics.median(known), digits)
    if len(known) > 1:
        text += f" ({_fmt(min(known), digits)} to {_fmt(max(known), digits)})"
    return text


def floor_text(floor: FloorResult, in_flight: int) -> str:
    return (
        f"{floor.calls_per_s:.1f} calls/s, {floor.cpu_ms_per_call:.2f} ms CPU/call,"
        f" RSS {floor.peak_rss_mb:.0f} MB, call p50 {floor.call_p50_s:.2f} s, server saw {in_flight} at once"
    )


def worker_text(worker: WorkerRun, floor: FloorResult) -> str:
    cpu = worker.cpu_ms_per_task
    cpu_text = "-" if cpu is None else f"{cpu:.2f} ms CPU/task ({cpu / floor.cpu_ms_per_call:.2f}x)"
    return (
        f"{worker.tasks_per_s:.1f} tasks/s ({worker.tasks_per_s / floor.calls_per_s:.2f} of the floor),"
        f" {cpu_text}, RSS {worker.peak_rss_mb:.0f} MB, run p50 {worker.run_p50_s:.2f} s,"
        f" server saw {worker.server_max_in_flight} at once"
    )


def ceiling_line(row: dict[str, Any]) -> str:
    return (
        f"| {row['in_flight']} | {row['delay_ms']} | {row['requests']} | {row['requests_per_s']:.0f} |"
        f" {row['ideal']:.0f} | {row['ratio']:.2f} | {row['server_max_in_flight']} |"
        f" {row['server_cpu_ms_per_request']:.3f} |"
    )


def _case_line(result: CaseResult) -> str:
    case = result.case
    floors, workers = result.floors, result.workers
    cells = [
        case.name,
        f"{case.concurrency:,}",
        str(result.threads),
        f"{case.ideal:,.0f}",
        _spread([f.calls_per_s for f in floors], 1),
        _spread([w.tasks_per_s for w in workers], 1),
        _spread(result.ratios(), 2),
        _fmt(result.peak_rss_mb(), 0),
        _fmt(max(f.peak_rss_mb for f in floors), 0),
        _spread([w.cpu_ms_per_task for w in workers], 2),
        _spread([f.cpu_ms_per_call for f in floors], 2),
        _spread(result.cpu_ratios(), 2),
        f"{_fmt(_median([w.run_p50_s for w in workers]), 2)}"
        f" / {_fmt(_median([f.call_p50_s for f in floors]), 2)}",
        f"{max(w.server_max_in_flight for w in workers)} / {max(result.floor_in_flight)}",
        "met" if result.met() else "**missed**",
    ]
    return "| " + " | ".join(cells) + " |"


def _run_lines(result: CaseResult) -> list[str]:
    lines = []
    for index, (floor, in_flight, worker) in enumerate(
        zip(result.floors, result.floor_in_flight, result.workers, strict=True), start=1
    ):
        cells = [
            result.case.name,
            str(index),
            f"{floor.calls_per_s:.1f}",
            f"{floor.cpu_ms_per_call:.2f}",
            f"{floor.peak_rss_mb:.0f}",
            f"{floor.call_p50_s:.2f} / {floor.call_p99_s:.2f}",
            str(in_flight),
            f"{worker.tasks_per_s:.1f}",
            f"{worker.warm_up_s:.2f}",
            _fmt(worker.cpu_ms_per_task, 2),
            f"{worker.peak_rss_mb:.0f} / {worker.peak_tree_rss_mb:.0f}",
            f"{worker.run_p50_s:.2f}",
            str(worker.server_max_in_flight),
            str(worker.server_connections),
            str(worker.max_pg_connections),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(
    ceiling: list[dict[str, Any]], results: list[CaseResult], command: str, load: str | None = None
) -> str:
    """The results file; ``command`` is the command line that produced it, ``load`` the machine's."""
    repeats = len(results[0].workers) if results else 0
    lines = [
        f"# I/O-bound agents: `{command}`",
        "",
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (f"; load before the run: {load}" if load else "")
        + ".",
        "Every Chat Completions call is answered after a fixed delay by `tests/fakes/fast_openai_server.py`",
        "(asyncio, its own process) and made through the real `openai` SDK.",
        "",
        "## The fake server's own ceiling",
        "",
        "Plain clients (one keep-alive `http.client` connection per thread, in the benchmark's process):",
        "",
        "| in flight | delay ms | requests | requests/s | ideal | ratio | server max in flight"
        " | server CPU ms/request |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(ceiling_line(row) for row in ceiling),
        "",
        "## One worker process against the floor",
        "",
        "**Floor**: a bare asyncio loop in its own process (`benchmarks/io_floor.py`) making the same SDK",
        "calls (`AsyncOpenAI`, one client per 32 calls in flight) at the same concurrency against a server",
        "with the same delay, no queue. **Worker**: `dramatiq actors -p 1 -t <threads>` with",
        "`QUEUE_CONCURRENCY` = in flight. Both run one warm-up round (as many calls as in flight) before",
        f"the measured ones. Floor and worker ran one after the other, {repeats} time(s) per case; cells",
        "give the median (and the range). Targets (issue #19): ratio ≥ 0.8; peak RSS ≤ 300 MB per process at",
        "1,000 in flight; CPU ratio ≤ 1.5.",
        "",
        "| case | in flight | threads | ideal calls/s | floor calls/s | worker tasks/s | ratio (≥ 0.8)"
        " | worker peak RSS MB per process (≤ 300) | floor peak RSS MB | worker CPU ms/task"
        " | floor CPU ms/call | CPU ratio (≤ 1.5) | run p50 s worker / call p50 s floor"
        " | server max in flight worker / floor | targets |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *(_case_line(result) for result in results),
        "",
        "*ideal* = in flight ÷ latency. *worker CPU ms/task*: the worker's process tree (dramatiq's main",
        "process and the worker process) after the warm-up count completed, per task (one model call",
        "each). *run p50*: a measured task's `started_at` → `completed_at`. *server max in flight*: the",
        "most calls the fake server saw waiting at once (below the concurrency: the caller, not the",
        "model, was the wait).",
        "",
        "### Every run",
        "",
        "| case | repeat | floor calls/s | floor CPU ms/call | floor RSS MB | floor call p50 / p99 s"
        " | floor server max in flight | worker tasks/s | worker warm-up round s | worker CPU ms/task"
        " | worker RSS MB largest process / tree | worker run p50 s | worker server max in flight"
        " | server connections | max Postgres connections |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        *(line for result in results for line in _run_lines(result)),
        "",
        "See `benchmarks/README.md` for the analysis.",
        "",
    ]
    return "\n".join(lines)


def figures(results: list[CaseResult]) -> list[Figure]:
    """Per case: the worker's throughput, RSS and CPU against the floor's (issue #19's targets)."""
    found = []
    for result in results:
        ratio, cpu_ratio = _median(result.ratios()), _median(result.cpu_ratios())
        worker_cpu = _median([w.cpu_ms_per_task for w in result.workers])
        found.append(
            Figure(
                "I/O-bound agents",
                f"{result.case.name}, {result.case.concurrency:,} in flight,"
                f" 1 process x {result.threads} threads",
                f"{_median([w.tasks_per_s for w in result.workers]) or 0:,.0f} tasks/s,"
                f" {_fmt(ratio, 2)} of the floor; peak RSS {result.peak_rss_mb():.0f} MB;"
                f" {_fmt(worker_cpu, 2)} ms CPU/task"
                f" ({_fmt(cpu_ratio, 2)} x the floor's)",
                f"floor {_median([f.calls_per_s for f in result.floors]) or 0:,.0f} calls/s,"
                f" {_fmt(_median([f.cpu_ms_per_call for f in result.floors]), 2)} ms CPU/call"
                " (bare asyncio loop, same SDK calls)",
                "≥ 0.8 of the floor, RSS ≤ 300 MB, CPU ≤ 1.5 x the floor's",
                result.met(),
            )
        )
    return found
