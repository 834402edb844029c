"""Hooks into the agent loop: subclass :class:`OrchestratorHooks`, override what you need.

The loop calls each hook synchronously, in the worker thread running the task. A hook
that raises is logged and ignored: observing a run never changes its outcome. Tracing
(spans per run, model call and tool call) plugs in here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.messages import ModelRequest, ModelResponse, ToolCall

if TYPE_CHECKING:
    from orchestrator.agent import AgentResult, AgentSpec, TaskInput
    from orchestrator.tools import ToolOutcome

__all__ = ["CompositeHooks", "OrchestratorHooks", "call_hook"]

logger = logging.getLogger("orchestrator.hooks")


class OrchestratorHooks:
    """No-op hooks called by :meth:`Orchestrator.run`; override the ones you need."""

    def on_run_start(self, agent: AgentSpec, task: TaskInput) -> None:
        """Called once, before the first model call."""

    def on_llm_start(self, request: ModelRequest, *, provider: str) -> None:
        """Called before each model call (``provider`` is the provider's name)."""

    def on_llm_delta(self, text: str, *, provider: str) -> None:
        """Called with each piece of text a streaming model call produces (agents with ``stream``)."""

    def on_llm_end(
        self,
        request: ModelRequest,
        response: ModelResponse | None,
        error: BaseException | None,
        *,
        provider: str,
    ) -> None:
        """Called after each model call: ``response`` on success, ``error`` on failure."""

    def on_tool_start(self, call: ToolCall) -> None:
        """Called before each tool call, allowed or not."""

    def on_tool_end(self, call: ToolCall, outcome: ToolOutcome | None, error: BaseException | None) -> None:
        """Called after each tool call: ``outcome`` when it returned, ``error`` when it timed out."""

    def on_run_end(self, result: AgentResult | None, error: BaseException | None) -> None:
        """Called once, when the run ends: ``result`` on success, ``error`` on failure."""


def call_hook(hook: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Call one hook; an exception it raises is logged and ignored."""
    try:
        hook(*args, **kwargs)
    except Exception:
        logger.exception("orchestrator hook %s raised; ignored", getattr(hook, "__qualname__", hook))


class CompositeHooks(OrchestratorHooks):
    """Calls several hooks in order (e.g. tracing, then metrics); each one's failure is logged and ignored."""

    def __init__(self, *hooks: OrchestratorHooks) -> None:
        self.hooks = hooks

    def on_run_start(self, agent: AgentSpec, task: TaskInput) -> None:
        for hook in self.hooks:
            call_hook(hook.on_run_start, agent, task)

    def on_llm_start(self, request: ModelRequest, *, provider: str) -> None:
        for hook in self.hooks:
            call_hook(hook.on_llm_start, request, provider=provider)

    def on_llm_delta(self, text: str, *, provider: str) -> None:
        for hook in self.hooks:
            call_hook(hook.on_llm_delta, text, provider=provider)

    def on_llm_end(
        self,
        request: ModelRequest,
        response: ModelResponse | None,
        error: BaseException | None,
        *,
        provider: str,
    ) -> None:
        for hook in reversed(self.hooks):
            call_hook(hook.on_llm_end, request, response, error, provider=provider)

    def on_tool_start(self, call: ToolCall) -> None:
        for hook in self.hooks:
            call_hook(hook.on_tool_start, call)

    def on_tool_end(self, call: ToolCall, outcome: ToolOutcome | None, error: BaseException | None) -> None:
        for hook in reversed(self.hooks):
            call_hook(hook.on_tool_end, call, outcome, error)

    def on_run_end(self, result: AgentResult | None, error: BaseException | None) -> None:
        for hook in reversed(self.hooks):
            call_hook(hook.on_run_end, result, error)
