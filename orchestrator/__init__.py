"""Provider-agnostic agent loop: prompt → model → allowed tools → … → final answer.

Knows nothing of Dramatiq or databases; Redis only in ``orchestrator.limits``, the model-call limiter
shared by every worker, which the loop reaches through the :class:`~orchestrator.limits.CallLimiter`
it is given. Importing it has no side effects.
"""

from __future__ import annotations

from orchestrator.agent import AgentResult, AgentSpec, Orchestrator, TaskInput, build_user_message
from orchestrator.errors import (
    AgentRunError,
    BaseUrlNotAllowed,
    DuplicateProvider,
    DuplicateTool,
    InvalidAgentSpec,
    LimitPostponed,
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
from orchestrator.limits import NO_LIMITS, CallLimiter, LimitPolicy, RedisLimiter
from orchestrator.messages import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    RateLimitReport,
    ToolCall,
    ToolSpec,
    Usage,
)
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
    "NO_LIMITS",
    "AgentResult",
    "AgentRunError",
    "AgentSpec",
    "BaseUrlNotAllowed",
    "BaseUrlPolicy",
    "CallLimiter",
    "ChatMessage",
    "DuplicateProvider",
    "DuplicateTool",
    "InvalidAgentSpec",
    "LimitPolicy",
    "LimitPostponed",
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
    "RateLimitReport",
    "RedisLimiter",
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
