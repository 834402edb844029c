"""Worker presence: which worker processes exist and what they run, for operators (the dashboard).

Dramatiq's Redis broker keeps one heartbeat per process (``<namespace>:__heartbeats__``, a sorted set of
broker ids scored by the millisecond of their last fetch or ack): it tells that a process is alive, not
what it is, and producers that enqueue through Dramatiq's scripts appear in it too. Each worker process
therefore also publishes itself under ``<namespace>:worker:<broker id>``: JSON with its host, pid,
threads, queues, start time, worker id (the one stored with the tasks it leases) and the ids of the
tasks it runs, refreshed every :data:`REFRESH_S` by a thread and expiring after :data:`TTL_S` (a
killed process vanishes by itself); deleted at a clean shutdown. :func:`read_workers` joins both.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis

from middleware.attempts import AttemptRegistry, process_worker_id

logger = logging.getLogger("agentq.presence")

#: Key prefix (under the broker's namespace) of the presence records.
KEY_PREFIX = "worker:"
#: Seconds between two refreshes of a worker's record.
REFRESH_S = 5.0
#: Seconds a record outlives its last refresh (a killed worker disappears after this).
TTL_S = 30
#: Dramatiq's heartbeat sorted set (under the namespace).
HEARTBEATS = "__heartbeats__"


class WorkerPresence(dramatiq.Middleware):
    """Publishes this worker process's presence record (see the module docstring)."""

    def __init__(
        self,
        attempts: AttemptRegistry,
        *,
        refresh_s: float = REFRESH_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.attempts = attempts
        self.refresh_s = refresh_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._record: dict[str, Any] = {}

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        client = getattr(broker, "client", None)
        if not isinstance(client, redis.Redis):
            return  # a broker without Redis (StubBroker in tests) has nobody to show it to
        queues = worker.consumer_whitelist or broker.get_declared_queues()
        self._record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "threads": worker.worker_threads,
            "queues": sorted(name for name in queues if not name.endswith((".DQ", ".XQ"))),
            "started_at": self.clock(),
            "worker_id": process_worker_id(),
        }
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(client, presence_key(broker)), name="agentq-presence", daemon=True
        )
        self._thread.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        client = getattr(broker, "client", None)
        if isinstance(client, redis.Redis):
            try:
                client.delete(presence_key(broker))
            except redis.RedisError as exc:
                logger.warning("Could not remove this worker's presence record: %s", exc)

    def _run(self, client: redis.Redis, key: str) -> None:
        while True:
            try:
                self.publish(client, key)
            except redis.RedisError as exc:
                logger.warning("Worker presence not published: %s", exc)
            if self._stop.wait(self.refresh_s):
                return

    def publish(self, client: redis.Redis, key: str) -> None:
        """Write this process's record now (the tasks it runs at this moment)."""
        running = sorted(attempt.task_id for attempt in self.attempts.held())
        record = {**self._record, "running": running, "published_at": self.clock()}
        client.set(key, json.dumps(record), ex=TTL_S)


def presence_key(broker: dramatiq.Broker) -> str:
    """The presence key of ``broker``'s process."""
    return f"{broker.namespace}:{KEY_PREFIX}{broker.broker_id}"  # type: ignore[attr-defined]


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process as operators see it."""

    broker_id: str
    host: str
    pid: int
    threads: int
    queues: tuple[str, ...]
    #: The id stored in ``worker_id`` of the tasks this process leases.
    worker_id: str
    #: Unix seconds.
    started_at: float
    #: Ids of the tasks it was running at its last refresh.
    running: tuple[str, ...]
    #: Unix seconds of its last heartbeat or refresh, whichever is later.
    last_seen: float


def read_workers(client: redis.Redis, namespace: str) -> list[WorkerInfo]:
    """Every worker process with a live presence record, by host then pid; last seen from its heartbeat."""
    keys = sorted(client.scan_iter(match=f"{namespace}:{KEY_PREFIX}*", count=500))
    if not keys:
        return []
    scored: Any = client.zrange(f"{namespace}:{HEARTBEATS}", 0, -1, withscores=True)
    heartbeats = {_text(member): float(score) / 1000 for member, score in scored}
    workers = []
    for key, raw in zip(keys, client.mget(keys), strict=True):
        if raw is None:
            continue  # expired between the scan and the read
        broker_id = _text(key).removeprefix(f"{namespace}:{KEY_PREFIX}")
        try:
            workers.append(_info(broker_id, json.loads(raw), heartbeats.get(broker_id, 0.0)))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("Ignoring a malformed worker presence record %r: %s", _text(key), exc)
    return sorted(workers, key=lambda worker: (worker.host, worker.pid, worker.broker_id))


def _info(broker_id: str, record: dict[str, Any], heartbeat: float) -> WorkerInfo:
    return WorkerInfo(
        broker_id=broker_id,
        host=str(record["host"]),
        pid=int(record["pid"]),
        threads=int(record["threads"]),
        queues=tuple(str(queue) for queue in record["queues"]),
        worker_id=str(record["worker_id"]),
        started_at=float(record["started_at"]),
        running=tuple(str(task_id) for task_id in record["running"]),
        last_seen=max(heartbeat, float(record["published_at"])),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
