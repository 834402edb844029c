"""How a network provider is configured: passed in, never read from the environment here."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_MAX_TOKENS", "ProviderSettings"]

#: Output token limit sent when neither the agent nor the settings give one (Anthropic requires one).
DEFAULT_MAX_TOKENS = 4096


@dataclass(frozen=True)
class ProviderSettings:
    """Settings of one network provider (OpenAI, Anthropic or an OpenAI-compatible server).

    Attributes:
        api_key: The API key; None means the provider is not configured, and any run
            using it fails with :class:`~orchestrator.errors.ProviderNotConfigured`.
        base_url: The API's base URL; None means the provider's public API. Agents may
            override it (``AgentSpec.base_url``).
        timeout_s: Longest a model call may take, in seconds (the run's remaining time
            shortens it).
        kind: Which SDK to speak, ``"openai"`` or ``"anthropic"``; None means the
            registry name (so ``"openai"`` → OpenAI). Lets e.g. ``"openrouter"`` speak OpenAI.
        api_key_variable: The setting named when the key is missing; None means
            ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` by kind.
        default_max_tokens: Output token limit when the agent sets none (Anthropic needs one).
        default_headers: Extra HTTP headers sent with every call.
    """

    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    timeout_s: float = 60.0
    kind: str | None = None
    api_key_variable: str | None = None
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    default_headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        """Reject settings that cannot work."""
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be at least 1, got {self.default_max_tokens}")
