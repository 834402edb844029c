"""Provider-agnostic agent loop: prompt → model → allowed tools → … → final answer.

Knows nothing of Dramatiq, Redis or databases. Importing it has no side effects.
"""

from __future__ import annotations

from orchestrator.agent import AgentResult, AgentSpec, Orchestrator, TaskInput, build_user_message
from orchestrator.errors import (
    AgentRunError,
    BaseUrlNotAllowed,
    DuplicateProvider,
    DuplicateTool,
    InvalidAgentSpec,
    MaxTurnsExceeded,
    ProviderAuthError,
    ProviderError,
    ProviderInvalidRequest,
    ProviderNotConfigured,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    RunCancelled,
    RunTimeLimitExceeded,
    ScriptedNotAllowed,
    ScriptError,
    ToolTimeout,
    UnknownProvider,
    UnknownTool,
)
from orchestrator.hooks import OrchestratorHooks
from orchestrator.messages import ChatMessage, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from orchestrator.pricing import DEFAULT_PRICES, ModelPrice, PriceTable
from orchestrator.providers import (
    BaseUrlPolicy,
    Provider,
    ProviderFactory,
    ProviderRegistry,
    ProviderSettings,
    ScriptedProvider,
)
from orchestrator.tools import Tool, ToolOutcome, ToolRegistry, default_registry

__all__ = [
    "DEFAULT_PRICES",
    "AgentResult",
    "AgentRunError",
    "AgentSpec",
    "BaseUrlNotAllowed",
    "BaseUrlPolicy",
    "ChatMessage",
    "DuplicateProvider",
    "DuplicateTool",
    "InvalidAgentSpec",
    "MaxTurnsExceeded",
    "ModelPrice",
    "ModelRequest",
    "ModelResponse",
    "Orchestrator",
    "OrchestratorHooks",
    "PriceTable",
    "Provider",
    "ProviderAuthError",
    "ProviderError",
    "ProviderFactory",
    "ProviderInvalidRequest",
    "ProviderNotConfigured",
    "ProviderQuotaExceeded",
    "ProviderRateLimited",
    "ProviderRegistry",
    "ProviderSettings",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RunCancelled",
    "RunTimeLimitExceeded",
    "ScriptError",
    "ScriptedNotAllowed",
    "ScriptedProvider",
    "TaskInput",
    "Tool",
    "ToolCall",
    "ToolOutcome",
    "ToolRegistry",
    "ToolSpec",
    "ToolTimeout",
    "UnknownProvider",
    "UnknownTool",
    "Usage",
    "build_user_message",
    "default_registry",
]
