"""Errors raised by the orchestrator.

Every error here derives from :class:`config.errors.AgentQueueError`. Errors that end an
agent run derive from :class:`AgentRunError`, which tells the caller whether trying the
run again could help (``retryable``) and, when the provider said so, how long to wait
(``retry_after_ms``). Messages always name the offending value.
"""

from __future__ import annotations

from config.errors import AgentQueueError


class AgentRunError(AgentQueueError):
    """An agent run could not finish.

    Attributes:
        retryable: Whether running the task again may succeed.
        retry_after_ms: How long to wait before retrying, when known.
    """

    #: Whether running the task again may succeed; subclasses override it.
    retryable: bool = False
    #: Delay asked for before a retry, in milliseconds, when known.
    retry_after_ms: int | None = None


class MaxTurnsExceeded(AgentRunError):
    """The agent used all its model calls without giving a final answer."""

    def __init__(self, max_turns: int) -> None:
        """Build the error.

        Args:
            max_turns: The limit that was reached.
        """
        self.max_turns = max_turns
        super().__init__(
            f"agent did not give a final answer within max_turns={max_turns}; "
            "raise max_turns or simplify the task"
        )


class UnknownProvider(AgentRunError):
    """No provider is registered under the requested name."""

    def __init__(self, name: str, known: tuple[str, ...] = ()) -> None:
        """Build the error.

        Args:
            name: The provider name that was asked for.
            known: The provider names that do exist, for the hint.
        """
        self.name = name
        hint = f"; known providers: {', '.join(known)}" if known else ""
        super().__init__(f"unknown provider {name!r}{hint}")


class UnknownTool(AgentRunError):
    """No tool is registered under the requested name."""

    def __init__(self, name: str) -> None:
        """Build the error.

        Args:
            name: The tool name that was asked for.
        """
        self.name = name
        super().__init__(f"unknown tool {name!r}")


class ProviderError(AgentRunError):
    """A model provider failed to answer."""

    def __init__(self, message: str, *, retryable: bool, retry_after_ms: int | None = None) -> None:
        """Build the error.

        Args:
            message: What went wrong, naming the provider and the cause.
            retryable: True for rate limits and server errors, False for bad requests
                and authentication failures.
            retry_after_ms: The delay the provider asked for, when it gave one.
        """
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
        super().__init__(message)


class ScriptError(AgentRunError):
    """A script given to the scripted provider is malformed."""

    def __init__(self, message: str) -> None:
        """Build the error.

        Args:
            message: What is wrong, naming the step index and the problem.
        """
        super().__init__(message)


class DuplicateTool(AgentQueueError, ValueError):
    """A tool name was registered twice in the same registry."""

    def __init__(self, name: str) -> None:
        """Build the error.

        Args:
            name: The tool name that is already registered.
        """
        self.name = name
        super().__init__(f"tool {name!r} is already registered; pick another name or a new registry")


class DuplicateProvider(AgentQueueError, ValueError):
    """A provider name was registered twice in the same registry."""

    def __init__(self, name: str) -> None:
        """Build the error.

        Args:
            name: The provider name that is already registered.
        """
        self.name = name
        super().__init__(f"provider {name!r} is already registered; pick another name or a new registry")


class InvalidAgentSpec(AgentRunError):
    """An agent's settings cannot be run (e.g. ``max_turns`` below 1)."""
