"""The whole performance suite in one command, one table: ``python -m benchmarks [--quick]``.

Each benchmark runs in a fresh interpreter (its runtime is built from the environment it
sets), one after the other so they never compete for the two cores, and returns its
figures: the measured value beside its peer from the same run and the target issue #9
holds it to. The table is printed and written to ``benchmarks/results/latest.md`` with the
machine it ran on; each benchmark also writes its detailed results file.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from benchmarks.summary import Figure, table

RESULTS = Path(__file__).resolve().parent / "results"
OUTPUT = RESULTS / "latest.md"


def pipeline(quick: bool) -> list[Figure]:
    from benchmarks import pipeline as bench

    args = bench.parse(["--quick", "--solo", "--no-ledger"] if quick else ["--solo", "--no-ledger"])
    runs, report = bench.run(args)
    args.output.write_text(report)
    return bench.figures(runs)


def latency(quick: bool) -> list[Figure]:
    from benchmarks import latency as bench

    steady, sparse = (100, 8) if quick else (200, 15)
    measured, bare = bench.run(steady, sparse)
    bench.OUTPUT.write_text(bench.render(measured, bare, steady, sparse), encoding="utf-8")
    return bench.figures(measured, bare)


def io_bound(quick: bool) -> list[Figure]:
    from benchmarks import io_bound as bench
    from benchmarks import io_results

    ceiling = bench.server_ceiling()
    results = bench.run(quick)
    command = "python -m benchmarks" + (" --quick" if quick else "") + " (suite)"
    bench.DEFAULT_OUTPUT.write_text(io_results.render(ceiling, results, command), encoding="utf-8")
    return io_results.figures(results)


def enqueue(quick: bool) -> list[Figure]:
    from benchmarks import enqueue as bench

    rows = bench.run(1_000 if quick else 5_000)
    bench.OUTPUT.write_text(bench.render(rows), encoding="utf-8")
    return bench.figures(rows)


def schedules(quick: bool) -> list[Figure]:
    from benchmarks import schedules as bench

    return bench.figures(bench.run(2_000 if quick else 10_000))


def tracing(quick: bool) -> list[Figure]:
    from benchmarks import tracing as bench

    return bench.figures(bench.run(300 if quick else 1_000, 1 if quick else 3, sample_ratio=0.1))


def limits(quick: bool) -> list[Figure]:
    from benchmarks import limits as bench

    cost, drained = bench.run(bench.parse(["--quick"] if quick else []))
    return bench.figures(cost, drained)


def events(quick: bool) -> list[Figure]:
    from benchmarks import events as bench

    tasks, repeats = (300, 1) if quick else (1_000, 3)
    cells = bench.run(tasks, repeats)
    parts = bench.breakdown(1_000)
    bench.OUTPUT.write_text(bench.render(cells, tasks, repeats, parts), encoding="utf-8")
    return bench.figures(cells)


def resume(quick: bool) -> list[Figure]:
    from benchmarks import resume as bench

    args = bench.parse(["--tasks", "30"] if quick else [])
    cases, report = bench.run(args)
    args.output.write_text(report, encoding="utf-8")
    return bench.figures(cases)


def dashboard(quick: bool) -> list[Figure]:
    from benchmarks import dashboard as bench

    result = bench.run(100_000 if quick else 1_000_000, 5 if quick else 10)
    bench.OUTPUT.write_text(bench.render(result), encoding="utf-8")
    return bench.figures(result)


#: Every benchmark of the suite, in the order it runs.
BENCHMARKS: dict[str, Callable[[bool], list[Figure]]] = {
    "pipeline": pipeline,
    "latency": latency,
    "io_bound": io_bound,
    "enqueue": enqueue,
    "schedules": schedules,
    "tracing": tracing,
    "limits": limits,
    "resume": resume,
    "events": events,
    "dashboard": dashboard,
}


def _machine() -> list[str]:
    return [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores, {platform.platform()}",
        f"- Python {platform.python_version()}, dramatiq {version('dramatiq')}, redis-py {version('redis')},"
        f" psycopg {version('psycopg')}, openai {version('openai')}",
    ]


def render(figures: list[Figure], quick: bool, wall_s: float, failed: list[str]) -> str:
    missed = [figure for figure in figures if figure.met is False]
    lines = [
        "# Performance suite: `python -m benchmarks" + (" --quick`" if quick else "`"),
        "",
        *_machine(),
        f"- wall time: {wall_s / 60:.1f} min" + ("; quick run (smaller N, one repeat)" if quick else ""),
        "",
        table(figures),
        "",
        f"Targets met: {sum(figure.met is True for figure in figures)},"
        f" missed: {len(missed)}. Details: `benchmarks/results/*-latest.md`; why a target is missed:"
        " `benchmarks/README.md`.",
    ]
    if failed:
        lines += ["", f"Did not complete: {', '.join(failed)} (see the output above)."]
    return "\n".join(lines) + "\n"


def _run_one(name: str, quick: bool) -> list[Figure]:
    return BENCHMARKS[name](quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N and one repeat: a smoke run")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    started = time.monotonic()
    figures: list[Figure] = []
    failed: list[str] = []
    context = multiprocessing.get_context("spawn")
    for name in args.only or list(BENCHMARKS):
        print(f"== {name}", file=sys.stderr, flush=True)
        with context.Pool(1) as pool:
            try:
                figures += pool.apply(_run_one, (name, args.quick))
            except Exception as exc:
                print(f"!! {name} failed: {exc!r}", file=sys.stderr, flush=True)
                failed.append(name)
    report = render(figures, args.quick, time.monotonic() - started, failed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    print(report)
    print(f"written to {args.output}", file=sys.stderr)
    return 1 if failed else 0
