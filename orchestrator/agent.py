"""The agent loop: model → tool calls → tool results → … → final answer.

The loop is provider-agnostic and knows nothing of queues or storage: it takes an
:class:`AgentSpec` and a :class:`TaskInput` and returns an :class:`AgentResult`, or raises
an :class:`~orchestrator.errors.AgentRunError`. A tool outside ``allowed_tools`` is never
executed: the model receives an error result and a warning is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import InvalidAgentSpec, MaxTurnsExceeded, UnknownTool
from orchestrator.messages import ChatMessage, ModelRequest, ModelResponse, ToolCall, Usage
from orchestrator.providers.registry import ProviderRegistry
from orchestrator.tools import ToolOutcome, ToolRegistry, default_registry

__all__ = [
    "MAX_TRANSCRIPT_CHARS",
    "AgentResult",
    "AgentSpec",
    "Orchestrator",
    "TaskInput",
    "build_user_message",
]

logger = logging.getLogger("orchestrator")

#: Longest string, in characters, kept in a transcript entry.
MAX_TRANSCRIPT_CHARS = 2_000
#: Context keys never shown to the model (``script`` drives the scripted provider).
HIDDEN_CONTEXT_KEYS = frozenset({"script"})


@dataclass(frozen=True)
class AgentSpec:
    """What an agent is: its model, prompt, tools and limits.

    Attributes:
        id: The agent's id.
        name: The agent's name, for logs.
        provider: The provider name (e.g. ``"scripted"``).
        model: The model name, as the provider knows it.
        system_prompt: The system prompt, if any.
        allowed_tools: The only tools this agent may run.
        temperature: Sampling temperature, or None for the provider default.
        max_tokens: Output token limit per call, or None for the provider default.
        max_turns: The most model calls one run may make (at least 1).
    """

    id: str
    name: str
    provider: str
    model: str
    system_prompt: str | None = None
    allowed_tools: tuple[str, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    max_turns: int = 10

    def __post_init__(self) -> None:
        """Reject settings that cannot run."""
        if self.max_turns < 1:
            raise InvalidAgentSpec(f"agent {self.name!r}: max_turns must be at least 1, got {self.max_turns}")


@dataclass(frozen=True)
class TaskInput:
    """The task an agent works on.

    Attributes:
        id: The task's id.
        title: A one-line summary; the first line of the user message.
        description: Details, if any.
        context: Extra data, shown to the model as JSON (except hidden keys such as ``script``).
    """

    id: str
    title: str
    description: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentResult:
    """The outcome of a successful run.

    Attributes:
        output: The final answer.
        turns: Model calls made.
        usage: Tokens used over all calls.
        transcript: One JSON-friendly dict per model call and per tool call, strings clipped.
        model: The model that gave the final answer.
    """

    output: str
    turns: int
    usage: Usage
    transcript: tuple[dict[str, Any], ...]
    model: str


def build_user_message(task: TaskInput) -> str:
    """Render a task as the first user message: title, description, then context as JSON."""
    parts = [task.title]
    if task.description:
        parts.append(task.description)
    context = {key: value for key, value in task.context.items() if key not in HIDDEN_CONTEXT_KEYS}
    if context:
        rendered = json.dumps(context, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        parts.append(f"Context:\n{rendered}")
    return "\n\n".join(parts)


def _clip(value: Any) -> Any:
    """Return a copy of a JSON-like value with every string clipped to the transcript bound."""
    if isinstance(value, str):
        if len(value) <= MAX_TRANSCRIPT_CHARS:
            return value
        return value[:MAX_TRANSCRIPT_CHARS] + f"... [{len(value) - MAX_TRANSCRIPT_CHARS} more chars]"
    if isinstance(value, Mapping):
        return {str(key): _clip(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clip(item) for item in value]
    return value


def _model_entry(turn: int, response: ModelResponse) -> dict[str, Any]:
    return {
        "type": "model",
        "turn": turn,
        "content": _clip(response.content),
        "tool_calls": [
            _clip({"id": c.id, "name": c.name, "arguments": c.arguments}) for c in response.tool_calls
        ],
        "usage": response.usage.to_dict(),
        "finish_reason": response.finish_reason,
    }


def _tool_entry(turn: int, call: ToolCall, outcome: ToolOutcome) -> dict[str, Any]:
    return {
        "type": "tool",
        "turn": turn,
        "name": call.name,
        "call_id": call.id,
        "arguments": _clip(call.arguments),
        "result": _clip(outcome.content),
        "is_error": outcome.is_error,
    }


class Orchestrator:
    """Runs agents on tasks.

    Args:
        providers: Where providers are looked up; None means a default
            :class:`ProviderRegistry` (the ``scripted`` provider).
        tools: Where tools are looked up; None means :func:`default_registry`.
    """

    def __init__(self, providers: ProviderRegistry | None = None, tools: ToolRegistry | None = None) -> None:
        """Create an orchestrator; see the class docstring."""
        self.providers = providers if providers is not None else ProviderRegistry()
        self.tools = tools if tools is not None else default_registry()

    def run(self, agent: AgentSpec, task: TaskInput) -> AgentResult:
        """Run the agent on the task until it gives a final answer.

        Args:
            agent: The agent to run.
            task: The task to work on.

        Returns:
            The final answer, the turns used, the summed usage and the transcript.

        Raises:
            UnknownProvider: The agent's provider is not registered.
            ProviderError: The provider failed (see ``retryable``).
            MaxTurnsExceeded: ``agent.max_turns`` model calls gave no final answer.
            ScriptError: The scripted provider's script is malformed.
        """
        provider = self.providers.get(agent.provider)
        specs = self.tools.specs(agent.allowed_tools)
        messages: list[ChatMessage] = [ChatMessage(role="user", content=build_user_message(task))]
        transcript: list[dict[str, Any]] = []
        usage = Usage()
        for turn in range(1, agent.max_turns + 1):
            request = ModelRequest(
                model=agent.model,
                system_prompt=agent.system_prompt,
                messages=tuple(messages),
                tools=specs,
                temperature=agent.temperature,
                max_tokens=agent.max_tokens,
                context=task.context,
            )
            response = provider.complete(request)
            usage += response.usage
            transcript.append(_model_entry(turn, response))
            logger.debug(
                "agent %s task %s turn %s: %s tool call(s)",
                agent.name,
                task.id,
                turn,
                len(response.tool_calls),
            )
            if not response.tool_calls:
                return AgentResult(
                    output=response.content or "",
                    turns=turn,
                    usage=usage,
                    transcript=tuple(transcript),
                    model=response.model,
                )
            messages.append(
                ChatMessage(role="assistant", content=response.content or "", tool_calls=response.tool_calls)
            )
            for call in response.tool_calls:
                outcome = self._run_tool(agent, task, call)
                transcript.append(_tool_entry(turn, call, outcome))
                messages.append(
                    ChatMessage(
                        role="tool", content=outcome.content, tool_call_id=call.id, is_error=outcome.is_error
                    )
                )
        raise MaxTurnsExceeded(agent.max_turns)

    def _run_tool(self, agent: AgentSpec, task: TaskInput, call: ToolCall) -> ToolOutcome:
        """Run one tool call, refusing tools the agent may not use."""
        if call.name not in agent.allowed_tools:
            logger.warning(
                "agent %s (%s) tried tool %r, which it is not allowed to use, in task %s; not executed",
                agent.name,
                agent.id,
                call.name,
                task.id,
            )
            return ToolOutcome(f"tool '{call.name}' is not allowed for this agent", is_error=True)
        if call.name not in self.tools:
            return ToolOutcome(str(UnknownTool(call.name)), is_error=True)
        return self.tools.execute(call.name, call.arguments)
