"""The I/O-bound benchmark's floor: a bare asyncio loop of SDK calls, in its own process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks import io_floor
from tests.fakes.fast_openai_server import FastOpenAIServer

ROOT = io_floor.ROOT


def test_the_floor_keeps_the_concurrency_in_flight_and_counts_the_measured_calls() -> None:
    # Given a server that answers after 50 ms
    with FastOpenAIServer(delay_s=0.05) as server:
        before = server.stats().connections
        # When the floor makes 10 warm-up and 40 measured calls, 10 at a time on 2 clients
        result = io_floor.measure(server.base_url, 10, 40, warm_up=10, clients=2, timeout_s=60)
        stats = server.stats()
    # Then the server answered every call, with all 10 waiting at once
    assert stats.requests == 50
    assert stats.max_in_flight == 10
    # And each client opened its own 5 connections and kept them (plus the stats poll's)
    assert stats.connections == before + 10 + 1
    # And the result describes the measured calls
    assert (result.concurrency, result.clients, result.warm_up, result.calls) == (10, 2, 10, 40)
    assert result.calls_per_s > 0 and result.cpu_ms_per_call > 0 and result.peak_rss_mb > 0
    assert 0.05 <= result.call_p50_s <= result.call_p99_s


def test_the_default_is_one_client_per_32_calls_in_flight() -> None:
    assert [io_floor.default_clients(n) for n in (1, 32, 33, 1000)] == [1, 1, 2, 32]


@pytest.mark.parametrize("option", ["--concurrency", "--calls", "--clients"])
def test_a_count_below_one_is_refused_naming_the_value(option: str) -> None:
    values = {"--concurrency": "4", "--calls": "4", "--clients": "1"} | {option: "0"}
    command = [sys.executable, "-m", "benchmarks.io_floor", "--base-url", "http://127.0.0.1:9/v1"]
    for name, value in values.items():
        command += [name, value]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"argument {option}: must be at least 1, got 0" in done.stderr


def test_a_failing_floor_raises_with_its_error() -> None:
    # Given no server on the port: the first call fails
    with pytest.raises(RuntimeError, match=r"the floor exited with 1: openai\.APIConnectionError"):
        io_floor.measure("http://127.0.0.1:9/v1", 2, 2, timeout_s=60)
