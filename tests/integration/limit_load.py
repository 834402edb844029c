"""Model calls as fast as a bucket lets them, from threads of this process (and of others, by running
``python -m tests.integration.limit_load``): a worker's view of the limiter without the rest of the queue.

Each thread makes calls one after the other. A call the limiter postpones sleeps until its booked slot
and comes back under the same task id, as a postponed task does. Every call's send time (after the
limiter let it go) and its tokens are returned; the answer "arrives" at once.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from dataclasses import dataclass, field

import redis

from config.rate_limits import RateLimit
from orchestrator.agent import TaskInput
from orchestrator.errors import LimitPostponed
from orchestrator.limits import LimitPolicy, RedisLimiter
from orchestrator.messages import ChatMessage, ModelRequest, ModelResponse, Usage

MODEL = "m"


def request(max_tokens: int) -> ModelRequest:
    """A call estimated at ``max_tokens`` + 5 tokens (a 4-character prompt)."""
    return ModelRequest(
        model=MODEL,
        system_prompt=None,
        messages=(ChatMessage("user", "load"),),
        tools=(),
        temperature=None,
        max_tokens=max_tokens,
    )


def answer(tokens: int) -> ModelResponse:
    """An answer that used ``tokens`` tokens in all."""
    return ModelResponse(
        "ok", (), Usage(input_tokens=tokens // 2, output_tokens=tokens - tokens // 2), MODEL, "stop"
    )


@dataclass
class Load:
    """What the threads did: each call's send time and tokens, and the postponements."""

    sends: list[tuple[float, int]] = field(default_factory=list)
    booked: int = 0
    unbooked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def run(
    redis_url: str,
    limit: RateLimit,
    *,
    seconds: float,
    threads: int,
    max_wait_ms: int,
    max_tokens: int = 10,
    name: str = "p",
) -> Load:
    """Call for ``seconds`` from ``threads`` threads, each call estimated at ``max_tokens`` + 5 and using
    a random number of tokens up to that."""
    client = redis.Redis.from_url(redis_url)
    limiter = RedisLimiter(client, LimitPolicy({f"openai:{MODEL}": limit}), max_wait_ms=max_wait_ms)
    load = Load()
    stop = time.monotonic() + seconds
    estimate = max_tokens + 5

    def loop(thread: int) -> None:
        rng = random.Random(thread)
        calls = 0
        while time.monotonic() < stop:
            task = TaskInput(id=f"{name}-{thread}-{calls}", title="load")
            try:
                permit = limiter.acquire("openai", request(max_tokens), task)
            except LimitPostponed as postponed:
                with load.lock:
                    load.booked += postponed.booked
                    load.unbooked += not postponed.booked
                time.sleep(postponed.postpone_ms / 1000)
                continue  # the same task comes back for its slot
            sent = time.time()
            used = rng.randint(1, estimate)
            permit.settle(response=answer(used))
            with load.lock:
                load.sends.append((sent, used))
            calls += 1

    workers = [threading.Thread(target=loop, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + 30)
    client.close()
    return load


def most_in_any_window(sends: list[tuple[float, int]], window_s: float) -> tuple[int, int]:
    """The most calls, and the most tokens, sent within any window of ``window_s`` seconds."""
    times = sorted(sends)
    most_calls = most_tokens = 0
    end = 0
    tokens = 0
    for start, (at, _) in enumerate(times):
        while end < len(times) and times[end][0] < at + window_s:
            tokens += times[end][1]
            end += 1
        most_calls = max(most_calls, end - start)
        most_tokens = max(most_tokens, tokens)
        tokens -= times[start][1]
    return most_calls, most_tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url")
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--tpm", type=int)
    parser.add_argument("--window-s", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--max-wait-ms", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=10)
    parser.add_argument("--name", default="p")
    args = parser.parse_args()
    load = run(
        args.redis_url,
        RateLimit(args.rpm, args.tpm, args.window_s),
        seconds=args.seconds,
        threads=args.threads,
        max_wait_ms=args.max_wait_ms,
        max_tokens=args.max_tokens,
        name=args.name,
    )
    print(json.dumps({"sends": load.sends, "booked": load.booked, "unbooked": load.unbooked}))


if __name__ == "__main__":
    main()
