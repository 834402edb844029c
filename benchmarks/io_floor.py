"""The floor of the I/O-bound benchmark: the worker's model calls on a bare asyncio loop, no queue.

    python -m benchmarks.io_floor --base-url URL --concurrency 1000 --calls 2000 [--warm-up N] [--clients K]

``openai.AsyncOpenAI`` clients (default: one per :data:`CALLS_PER_CLIENT` calls in flight; ``--clients
1`` for one), their connection pools raised to the calls they carry, and ``concurrency`` coroutines
(round-robin over the clients) taking calls from one counter: first ``--warm-up`` calls (default:
the concurrency, one round, which opens the connections), then ``--calls`` measured ones. Each
is the call the ``openai`` provider makes for a benchmark task (``chat.completions.with_raw_response
.create`` with the agent's system prompt and the task's title, then ``parse()``). Nothing else
runs in the process, so this is the best any queue could do in Python on this machine.

Prints one JSON object (:class:`FloorResult`): measured calls / (their last end - their first
start); the process's CPU after ``warm-up`` calls had completed divided by the calls completed
since (the worker's CPU per task is counted the same way); the process's peak RSS; the median
and 99th percentile of a measured call's duration. Run it in its own process (:func:`measure`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: The model and messages of a benchmark task: the agent's system prompt and the task's title.
MODEL = "gpt-4o-mini"
SYSTEM_PROMPT = "You are a benchmark agent. Answer in one word. " * 4
TITLE = "io"
#: Calls in flight per SDK client by default. One ``httpx`` pool walks all of its connections
#: when a request starts and when its response closes: at 1,000 calls in flight on one client a
#: call cost 4.5 ms of CPU against 1.5 ms with clients of 32 (``benchmarks/README.md``).
CALLS_PER_CLIENT = 32
#: Longest a model call may take, in seconds.
CALL_TIMEOUT_S = 120.0
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FloorResult:
    """What one floor run measured (see the module docstring)."""

    concurrency: int
    clients: int
    warm_up: int
    calls: int
    calls_per_s: float
    cpu_ms_per_call: float
    peak_rss_mb: float
    call_p50_s: float
    call_p99_s: float


def default_clients(concurrency: int) -> int:
    """SDK clients the floor uses by default: one per :data:`CALLS_PER_CLIENT` calls in flight."""
    return -(-concurrency // CALLS_PER_CLIENT)


async def _run(base_url: str, concurrency: int, warm_up: int, calls: int, clients: int) -> FloorResult:
    import httpx2
    import openai

    per_client = -(-concurrency // clients)
    limits = httpx2.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    pool = [
        openai.AsyncOpenAI(
            api_key="sk-bench",
            base_url=base_url,
            max_retries=0,
            timeout=CALL_TIMEOUT_S,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits),
        )
        for _ in range(clients)
    ]
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": TITLE}]
    total = warm_up + calls
    starts = [0.0] * total
    ends = [0.0] * total
    state = {"next": 0, "done": 0}
    marks: list[tuple[int, float]] = [(0, time.process_time())] if warm_up == 0 else []

    async def caller(client: openai.AsyncOpenAI) -> None:
        while state["next"] < total:
            index = state["next"]
            state["next"] += 1
            starts[index] = time.monotonic()
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=messages,  # type: ignore[arg-type]
                timeout=CALL_TIMEOUT_S,
            )
            completion = raw.parse()
            if not completion.choices:
                raise RuntimeError("the fake server's answer had no choices")
            ends[index] = time.monotonic()
            state["done"] += 1
            if state["done"] == warm_up:
                marks.append((warm_up, time.process_time()))

    await asyncio.gather(*(caller(pool[index % clients]) for index in range(concurrency)))
    for client in pool:
        await client.close()
    (done_0, cpu_0), cpu_1 = marks[0], time.process_time()
    durations = sorted(end - start for start, end in zip(starts[warm_up:], ends[warm_up:], strict=True))
    return FloorResult(
        concurrency=concurrency,
        clients=clients,
        warm_up=warm_up,
        calls=calls,
        calls_per_s=calls / (max(ends[warm_up:]) - min(starts[warm_up:])),
        cpu_ms_per_call=(cpu_1 - cpu_0) * 1000 / (total - done_0),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        call_p50_s=statistics.median(durations),
        call_p99_s=durations[min(len(durations) - 1, int(len(durations) * 0.99))],
    )


def measure(
    base_url: str,
    concurrency: int,
    calls: int,
    warm_up: int | None = None,
    *,
    clients: int | None = None,
    timeout_s: float = 600.0,
) -> FloorResult:
    """Run the floor in a fresh interpreter (its own GIL, RSS and CPU) and return what it measured."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.io_floor",
        "--base-url",
        base_url,
        "--concurrency",
        str(concurrency),
        "--calls",
        str(calls),
        "--clients",
        str(default_clients(concurrency) if clients is None else clients),
    ]
    if warm_up is not None:
        command += ["--warm-up", str(warm_up)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the floor exited with {done.returncode}: {last}")
    fields: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return FloorResult(**fields)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """The command line: run the floor and print its :class:`FloorResult` as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.io_floor", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--base-url", required=True, help="the fake server's SDK base URL (…/v1)")
    parser.add_argument("--concurrency", type=_positive, required=True, help="model calls in flight")
    parser.add_argument("--calls", type=_positive, required=True, help="measured calls")
    parser.add_argument(
        "--clients",
        type=_positive,
        default=None,
        help=f"SDK clients (default: one per {CALLS_PER_CLIENT} in flight)",
    )
    parser.add_argument(
        "--warm-up", type=int, default=None, help="calls before them (default: the concurrency)"
    )
    args = parser.parse_args(argv)
    warm_up = args.concurrency if args.warm_up is None else args.warm_up
    if warm_up < 0:
        parser.error(f"--warm-up must be >= 0, got {warm_up}")
    clients = default_clients(args.concurrency) if args.clients is None else args.clients
    result = asyncio.run(_run(args.base_url, args.concurrency, warm_up, args.calls, clients))
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
