"""Typed settings read from the environment, and the project's error root."""

from __future__ import annotations

from config.errors import AgentQueueError, ConfigError

__all__ = ["AgentQueueError", "ConfigError"]
