"""CPU per run of the hand-offs that put a run on the event loop and write its end, alone.

Run from the repository root::

    python -m benchmarks.handoff                      # 8 threads x 20,000 trivial runs, 5 rounds
    git show REV:middleware/in_flight.py > /tmp/old_in_flight.py
    python -m benchmarks.handoff --against /tmp/old_in_flight.py   # that copy and this one, interleaved

Eight threads each take a slot of ``middleware.in_flight.RunsInFlight`` and start a coroutine that
returns at once; the end is "written" by a callback that does nothing. What is measured is only the
machinery: the slot, the trip to the process's loop, the done callback, the finisher thread and the
slot given back. The process's CPU time per run (every thread), and the wall time per run, are printed
per round, then the medians. ``--against`` loads another copy of ``in_flight.py`` (an older revision)
as a module of its own and runs it in alternate rounds, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from middleware import in_flight
from orchestrator.event_loop import process_loop

THREADS = 8


class _Attempt:
    """The one attribute of an attempt the machinery reads (in its error messages)."""

    task_id = "bench"


async def _trivial() -> int:
    return 1


def _ignore(result: Any, error: BaseException | None) -> None:
    """The end's "write": nothing, so only the hand-offs are measured."""


def measure(module: ModuleType, runs: int) -> tuple[float, float]:
    """CPU and wall microseconds per run of ``runs`` runs through ``module.RunsInFlight``."""
    slots = module.RunsInFlight(THREADS)

    def worker(count: int) -> None:
        for _ in range(count):
            slots.acquire()
            slots.start(_Attempt(), module.RunOnLoop(_trivial()), _ignore)

    process_loop()
    cpu, wall = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=worker, args=(runs // THREADS,)) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not slots.wait_idle(60):
        raise RuntimeError("runs still in flight after 60 s")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    slots.shutdown()
    done = runs // THREADS * THREADS
    return cpu / done * 1e6, wall / done * 1e6


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("in_flight_against", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--against {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.handoff", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=20_000, help="runs per round (default 20,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per module (default 5)")
    parser.add_argument("--against", type=Path, help="another copy of middleware/in_flight.py, interleaved")
    args = parser.parse_args(argv)
    if args.runs < THREADS or args.rounds < 1:
        parser.error(f"--runs must be at least {THREADS} and --rounds at least 1")
    modules = {"this": in_flight}
    if args.against is not None:
        modules["against"] = _load(args.against)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in modules}
    for round_ in range(1, args.rounds + 1):
        for name, module in modules.items():
            cpu, wall = measure(module, args.runs)
            results[name].append((cpu, wall))
            print(f"round {round_} {name:8}: {cpu:6.1f} µs CPU, {wall:6.1f} µs wall per run")
    for name, rounds in results.items():
        cpus = [cpu for cpu, _ in rounds]
        median, wall = statistics.median(cpus), statistics.median(w for _, w in rounds)
        spread = f"{min(cpus):.1f} to {max(cpus):.1f}"
        print(f"{name:8}: CPU per run median {median:.1f} µs ({spread}), wall {wall:.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
