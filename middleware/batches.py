"""Enqueue batches: several messages sent in one broker round trip (``LaneBroker.enqueue_many``).

A batch runs every message's ``before_enqueue`` first, then sends them all, then runs every
``after_enqueue``. Middleware that pair the two hooks per thread (tracing's publish spans) ask
:func:`current_batch` to tell a batch's earlier messages, still in flight, from an enqueue that
never completed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

_batch: contextvars.ContextVar[object | None] = contextvars.ContextVar("agentq_enqueue_batch", default=None)


@contextmanager
def enqueue_batch() -> Iterator[object]:
    """Mark the ``before_enqueue`` hooks run inside as one batch's; yields the batch's token."""
    token = object()
    reset = _batch.set(token)
    try:
        yield token
    finally:
        _batch.reset(reset)


def current_batch() -> object | None:
    """The token of the batch whose ``before_enqueue`` hooks are running, or ``None`` (a single enqueue)."""
    return _batch.get()
