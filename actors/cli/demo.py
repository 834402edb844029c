"""The embedded demo (``agentq demo``): a real worker runs a handful of tasks end to end.

Uses whatever the environment configures — by default SQLite at ``./agentq.db``,
Redis on localhost and the offline ``scripted`` provider, so it needs no key.
When no Redis answers, a throwaway ``redis-server`` is started if one is
installed; otherwise the demo says how to get one.

While the worker runs, the financial report task's live events are printed as they happen
(``agent_task_queue.events``): its model calls, tool calls and, its agent streaming, the text of
its answer as ``llm_delta`` events (the demo's worker records content: ``AGENTQ_TRACE_CONTENT=true``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis

from config.redaction import redact
from config.settings import load_settings

if TYPE_CHECKING:
    from actors.events import Event

#: The demo's organization; agent ids derive from it, so reruns reuse the same agents.
DEMO_ORG = "00000000-0000-4000-8000-00000000de70"
_TERMINAL = {"completed", "failed", "cancelled"}


def _redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _redis_available(url: str) -> Iterator[str | None]:
    """Yields the Redis URL to use, starting a throwaway server when needed; ``None`` if impossible."""
    if _redis_answers(url):
        yield url
        return
    server = shutil.which("redis-server")
    if server is None:
        yield None
        return
    port = _free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    throwaway = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not _redis_answers(throwaway):
            if time.monotonic() > deadline or process.poll() is not None:
                yield None
                return
            time.sleep(0.05)
        print(f"No Redis at {redact(url)}: started a throwaway redis-server on port {port}")
        yield throwaway
    finally:
        process.terminate()
        process.wait(timeout=10)


def _demo_tasks() -> list[dict[str, Any]]:
    return [
        {
            "kind": "general",
            "title": "What time is it in Tokyo?",
            "context": {"script": [{"tool": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}]},
            "priority": 5,
        },
        {
            "kind": "financial_report",
            "title": "Q3 revenue summary",
            "description": "Revenue was 120,400 in Q2 and 131,900 in Q3. Report the growth.",
            "context": {
                "script": [
                    {"tool": "calculate", "arguments": {"expression": "131900 - 120400"}},
                    {"tool": "calculate", "arguments": {"expression": "(131900 - 120400) / 120400 * 100"}},
                    {
                        "answer": "Q3 revenue grew by 11,500 (9.55%) over Q2. Keep investing in renewals.",
                        "chunk_ms": 40,  # streamed word by word, as a real model would
                    },
                ]
            },
            "priority": 7,
            "follow": True,
        },
        {
            "kind": "member_retention",
            "title": "Win back inactive members",
            "context": {
                "members": [{"name": "Ana", "last_visit_days": 41}, {"name": "Ben", "last_visit_days": 3}],
                "script": [
                    {"tool": "get_current_time", "arguments": {"timezone": "UTC"}},
                    {"answer": "Ana is at risk (41 days away): 'We miss you, Ana: next class is on us.'"},
                ],
            },
            "priority": 8,
            "send": True,
        },
        {"kind": "general", "title": "Urgent: summarise the incident report", "priority": 10},
        {"kind": "general", "title": "Follow-up check (delayed 1.5 s)", "priority": 3, "delay_ms": 1500},
    ]


def _setup_tasks() -> tuple[list[str], str]:
    """Create the demo agents (once) and tasks, and enqueue the tasks. Returns the task ids, and the id of
    the task whose events the demo follows."""
    from actors import agent_task_queue, member_retention, runtime
    from taskstore import NewAgent, utcnow

    runtime.store.migrate()
    agents: dict[str, str] = {}
    for kind, tools in (
        ("general", ("calculate", "get_current_time")),
        ("financial_report", ("calculate",)),
        ("member_retention", ("calculate",)),  # get_current_time is NOT allowed: the guard shows in the log
    ):
        agent_id = str(uuid.uuid5(uuid.UUID(DEMO_ORG), kind))
        if runtime.store.get_agent(agent_id) is None:
            new = NewAgent(
                id=agent_id,
                organization_id=DEMO_ORG,
                name=f"Demo {kind.replace('_', ' ')} agent",
                provider="scripted",  # offline and deterministic: the worker below allows it
                model="scripted-1",
                kind=kind,
                allowed_tools=tools,
                system_prompt="You are a helpful assistant for a small business.",
                stream=kind == "financial_report",  # its answer arrives as llm_delta events
            )
            runtime.store.create_agent(new, now=utcnow())
        agents[kind] = agent_id
    task_ids, followed = [], ""
    for spec in _demo_tasks():
        task = agent_task_queue.create_task(
            agent_id=agents[spec["kind"]],
            organization_id=DEMO_ORG,
            title=spec["title"],
            description=spec.get("description"),
            context=spec.get("context"),
            priority=spec["priority"],
        )
        if spec.get("send"):
            member_retention.send(task.id)
        else:
            agent_task_queue.add_task(task.id, spec["priority"], spec.get("delay_ms", 0))
        task_ids.append(task.id)
        if spec.get("follow"):
            followed = task.id
    return task_ids, followed


def _print_events(task_id: str, timeout_s: float) -> None:
    """Print ``task_id``'s events as they happen, until it ends (at most ``timeout_s``)."""
    from actors import agent_task_queue
    from actors.events import describe

    print(f"Live events of task {task_id} (agentq events {task_id} --follow):")
    started: float | None = None
    for event in agent_task_queue.events(task_id, follow=True, timeout_s=timeout_s):
        at = _seconds(event)
        started = at if started is None else started
        print(f"  +{at - started:6.3f}s  {event.type:<14}  {describe(event)}", flush=True)
    print()


def _seconds(event: Event) -> float:
    return int(event.id.split("-")[0]) / 1000


def _wait_for(task_ids: list[str], worker: subprocess.Popen[bytes], timeout_s: float) -> bool:
    from actors import runtime

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tasks = [runtime.store.get_task(task_id) for task_id in task_ids]
        if all(task is not None and task.status.value in _TERMINAL for task in tasks):
            return True
        if worker.poll() is not None:
            print(f"the worker exited early with code {worker.returncode}", file=sys.stderr)
            return False
        time.sleep(0.1)
    print(f"the demo tasks did not finish within {timeout_s:g} s", file=sys.stderr)
    return False


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)


def _report(task_ids: list[str]) -> bool:
    from actors import agent_task_queue

    print("\nResults:")
    ok = True
    for task_id in task_ids:
        job = agent_task_queue.get_job(task_id)
        assert job is not None
        output = (job.result or {}).get("output", job.failed_reason)
        print(f"  {job.status.value:<9} p{job.priority:<2} {job.task.title} -> {output}")
        ok = ok and job.status.value == "completed"
    stats = agent_task_queue.get_queue_stats()
    print(
        "\nQueue stats: "
        + ", ".join(
            f"{name}={getattr(stats, name)}"
            for name in ("waiting", "active", "completed", "failed", "delayed", "paused")
        )
    )
    return ok


def run_demo(*, timeout_s: float = 120.0) -> int:
    """Run the demo; returns the process exit code."""
    configured = load_settings().redis_connection_url()
    with _redis_available(configured) as url:
        if url is None:
            print(
                f"No Redis answers at {redact(configured)} and no redis-server is installed.\n"
                "Install one (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)\n"
                "or point REDIS_URL at a running server, then run this command again.",
                file=sys.stderr,
            )
            return 1
        if url != configured:
            # This process's broker was built for the configured URL when ``actors`` was imported:
            # run the demo in a fresh process pointed at the throwaway server.
            command = [sys.executable, "-m", "actors.cli", "demo", "--timeout", str(timeout_s)]
            return subprocess.call(command, env={**os.environ, "REDIS_URL": url})
        return _run(timeout_s)


def _run(timeout_s: float) -> int:
    task_ids, followed = _setup_tasks()
    threads = str(load_settings().threads)
    print(f"\nStarting a worker: dramatiq actors --processes 1 --threads {threads}\n")
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "actors", "--processes", "1", "--threads", threads],
        # The demo's agents are scripted; its events show their (made-up) prompts and answers.
        env={**os.environ, "AGENTQ_ALLOW_SCRIPTED": "true", "AGENTQ_TRACE_CONTENT": "true"},
    )
    try:
        _print_events(followed, timeout_s)
        finished = _wait_for(task_ids, worker, timeout_s)
    finally:
        _stop(worker)
    return 0 if finished and _report(task_ids) else 1
