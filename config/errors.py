"""The project's error root.

Every exception the project raises on purpose derives from :class:`AgentQueueError`,
so callers can catch one class. Each package defines its own subclasses next to the
code that raises them; messages name the offending value.
"""

from __future__ import annotations


class AgentQueueError(Exception):
    """Root of every error Agent Task Queue raises on purpose."""


class ConfigError(AgentQueueError):
    """A setting from the environment is missing or invalid."""
