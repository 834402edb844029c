"""The project's error root.

Every exception the project raises on purpose derives from :class:`AgentQueueError`,
so callers can catch one class. Each package defines its own subclasses next to the
code that raises them; messages name the offending value.
"""

from __future__ import annotations


class AgentQueueError(Exception):
    """Root of every error Agent Task Queue raises on purpose."""

    #: Whether running the task again may succeed, when this error ends an attempt in a worker
    #: (read by ``middleware.failure_policy``); a subclass declares ``retryable = False`` to fail at once.
    retryable: bool = True


class ConfigError(AgentQueueError):
    """A setting from the environment is missing or invalid."""


#: Most characters of a value's ``repr`` quoted in an error message (see :func:`short_repr`).
MAX_QUOTED_CHARS = 100


def short_repr(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters with its length named.

    A long string becomes ``'aaaa…' (1048576 characters)``; any other long value
    ``[1, 2, …] (list, repr of 50000 characters)``. Short values are ``repr(value)`` unchanged.
    """
    if isinstance(value, str | bytes) and len(value) > limit:
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}… ({len(value)} {unit})"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({type(value).__name__}, repr of {len(text)} characters)"
