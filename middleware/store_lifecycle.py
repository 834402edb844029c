"""The task store's part of a worker's life: a current schema before it starts, closed connections after.

First in the stack, so its ``before_worker_boot`` runs first — a worker on a database that lacks a
migration refuses to start (:class:`~taskstore.errors.SchemaMissing`, naming what to apply) before any
thread takes a message — and its ``after_worker_shutdown`` runs last: after the last attempt was
written and the lease and reconciliation threads stopped. (Dramatiq's CLI closes the broker's Redis
connections itself.) A database that is unreachable at boot does not stop the worker: claims put their
messages back until it returns (docs/architecture.md, *Failure paths*).
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import MiddlewareError

from taskstore import SchemaMissing, StoreUnavailable, TaskStore

logger = logging.getLogger(__name__)


class WorkerRefusedToStart(MiddlewareError):
    """The worker cannot run safely here (Dramatiq lets a ``MiddlewareError`` stop ``worker.start()``)."""


class StoreLifecycle(dramatiq.Middleware):
    """Checks (or, embedded, applies) the schema at worker boot; releases connections at shutdown."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        try:
            self.store.ensure_schema()
        except SchemaMissing as exc:
            logger.critical("refusing to start: %s", exc)
            raise WorkerRefusedToStart(str(exc)) from exc
        except StoreUnavailable as exc:
            logger.warning("cannot check the task store's schema at boot (%s); starting anyway", exc)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.store.close()
