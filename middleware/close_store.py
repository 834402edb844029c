"""Closes the task store's connections when a worker shuts down.

First in the stack, so its ``after_worker_shutdown`` runs last: after the last
attempt was written and the lease and reconciliation threads stopped. (Dramatiq's
CLI closes the broker's Redis connections itself.)
"""

from __future__ import annotations

import dramatiq

from taskstore import TaskStore


class CloseStore(dramatiq.Middleware):
    """Releases the store's database connections at worker shutdown."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.store.close()
