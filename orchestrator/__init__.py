"""Provider-agnostic agent loop: prompt → model → allowed tools → … → final answer.

Knows nothing of Dramatiq, Redis or databases. Importing it has no side effects.
"""

from __future__ import annotations

from orchestrator.agent import AgentResult, AgentSpec, Orchestrator, TaskInput, build_user_message
from orchestrator.errors import (
    AgentRunError,
    DuplicateProvider,
    DuplicateTool,
    InvalidAgentSpec,
    MaxTurnsExceeded,
    ProviderError,
    ScriptError,
    UnknownProvider,
    UnknownTool,
)
from orchestrator.messages import ChatMessage, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from orchestrator.providers import Provider, ProviderFactory, ProviderRegistry, ScriptedProvider
from orchestrator.tools import Tool, ToolOutcome, ToolRegistry, default_registry

__all__ = [
    "AgentResult",
    "AgentRunError",
    "AgentSpec",
    "ChatMessage",
    "DuplicateProvider",
    "DuplicateTool",
    "InvalidAgentSpec",
    "MaxTurnsExceeded",
    "ModelRequest",
    "ModelResponse",
    "Orchestrator",
    "Provider",
    "ProviderError",
    "ProviderFactory",
    "ProviderRegistry",
    "ScriptError",
    "ScriptedProvider",
    "TaskInput",
    "Tool",
    "ToolCall",
    "ToolOutcome",
    "ToolRegistry",
    "ToolSpec",
    "UnknownProvider",
    "UnknownTool",
    "Usage",
    "build_user_message",
    "default_registry",
]
