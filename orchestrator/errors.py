"""Errors raised by the orchestrator.

Every error here derives from :class:`config.errors.AgentQueueError`. Errors that end an
agent run derive from :class:`AgentRunError`, which tells the caller whether trying the
run again could help (``retryable``), how long to wait (``retry_after_ms``), whether to
postpone the task without consuming an attempt (``postpone_ms``), and what the run did
before it failed (``usage``, ``transcript``, ``cost_usd``). Messages always name the
offending value.

Retryable or not, at a glance:

=============================  =========  ==============================================
Error                          Retryable  Why
=============================  =========  ==============================================
ProviderRateLimited (429)      yes        also ``postpone_ms``: postpone, keep the attempt
LimitPostponed                 yes        a model or organization limit is reached: postpone
                                          to the call's booked slot, keep the attempt
ProviderQuotaExceeded (429)    no         OpenAI ``insufficient_quota``: billing, not load
ProviderUnavailable (5xx,      yes        the provider or the network is having a bad time
408, 409, connection)
ProviderTimeout                yes        (a subclass of ProviderUnavailable)
ProviderAuthError (401, 403)   no         a wrong or missing key will stay wrong
ProviderInvalidRequest (400,   no         the same request will be refused again
404, 413, 422, other 4xx)
ProviderNotConfigured          no         no API key configured; names the variable
ScriptedNotAllowed             no         a worker without AGENTQ_ALLOW_SCRIPTED=true
BaseUrlNotAllowed              no         the agent's base_url is not in AGENTQ_ALLOWED_BASE_URLS
ToolTimeout                    yes        usually a slow dependency of the tool
RunTimeLimitExceeded           no         the same work would take as long again
MaxTurnsExceeded               no         the same agent would loop again
RunCancelled                   no         somebody asked for it; mark ``cancelled``
ApprovalRequired               no         not a failure: the task waits for a person
                                          (``awaits_approval``; see ``orchestrator.approvals``)
=============================  =========  ==============================================
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from config.errors import AgentQueueError, short_repr
from orchestrator.messages import RateLimitReport, Usage


class AgentRunError(AgentQueueError):
    """An agent run could not finish.

    The orchestrator fills ``usage``, ``transcript`` and ``cost_usd`` with what the run did
    before failing, so the caller can store them on the failed run.

    Attributes:
        retryable: Whether running the task again may succeed.
        retry_after_ms: How long to wait before retrying, when known.
        postpone_ms: When set, postpone the task by this long without consuming an
            attempt (a rate limit: the task itself is fine).
        usage: Tokens used by the run before it failed.
        transcript: The run's transcript up to the failure.
        cost_usd: The run's cost up to the failure, or None when a model's price is unknown.
    """

    #: Whether running the task again may succeed; subclasses override it.
    retryable: bool = False
    #: Delay asked for before a retry, in milliseconds, when known.
    retry_after_ms: int | None = None
    #: Postpone the task by this long without consuming an attempt, when set.
    postpone_ms: int | None = None
    #: Why the task is postponed, for metrics (e.g. ``provider_429``, ``rpm``, ``org_tpm``).
    postpone_cause: str | None = None
    #: Whether this postponement counts toward ``AGENTQ_MAX_POSTPONES``. False only for a wait whose
    #: end is known and held for the task (a slot booked in a bucket of our own limits).
    counts_toward_max_postpones: bool = True
    #: End the task ``cancelled`` rather than failed (the run was asked to stop).
    cancels_task: bool = False
    #: Not a failure: the run stopped at a tool call a person must approve; the task waits for the decision.
    awaits_approval: bool = False
    #: Tokens used by the run before it failed (set by the orchestrator).
    usage: Usage
    #: The transcript up to the failure (set by the orchestrator).
    transcript: list[dict[str, Any]]
    #: The cost up to the failure, None when unknown (set by the orchestrator).
    cost_usd: Decimal | None

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.usage, self.transcript, self.cost_usd = Usage(), [], None

    def record_run(self, usage: Usage, transcript: list[dict[str, Any]], cost_usd: Decimal | None) -> None:
        """Record what the run did before this error ended it (called by the orchestrator)."""
        self.usage, self.transcript, self.cost_usd = usage, transcript, cost_usd


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
        super().__init__(f"unknown provider {short_repr(name)}{hint}")


class UnknownTool(AgentRunError):
    """No tool is registered under the requested name."""

    def __init__(self, name: str) -> None:
        """Build the error.

        Args:
            name: The tool name that was asked for.
        """
        self.name = name
        super().__init__(f"unknown tool {short_repr(name)}")


class ProviderError(AgentRunError):
    """A model provider failed to answer.

    Attributes:
        provider: The provider's name, when known.
        status_code: The HTTP status the provider answered with, when there was one.
        rate_limits: The provider's rate-limit headers on the error answer, when it sent any.
    """

    #: The provider's rate-limit headers on the error answer (set by the provider), when it sent any.
    rate_limits: RateLimitReport | None = None

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after_ms: int | None = None,
        provider: str | None = None,
        status_code: int | None = None,
    ) -> None:
        """Build the error.

        Args:
            message: What went wrong, naming the provider and the cause.
            retryable: True for rate limits and server errors, False for bad requests
                and authentication failures.
            retry_after_ms: The delay the provider asked for, when it gave one.
            provider: The provider's name.
            status_code: The HTTP status, when there was one.
        """
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
        self.provider = provider
        self.status_code = status_code
        super().__init__(message)


class ProviderRateLimited(ProviderError):
    """The provider rate-limited the call (HTTP 429): postpone the task, keep the attempt.

    Attributes:
        postpone_ms: The provider's Retry-After, or :data:`DEFAULT_POSTPONE_MS` without one. The
            header parser caps it at 24 h; the worker's failure policy at ``AGENTQ_MAX_POSTPONE_MS``.
    """

    #: Postponement used when a 429 carries no Retry-After, in milliseconds.
    DEFAULT_POSTPONE_MS = 5_000
    postpone_cause = "provider_429"

    def __init__(
        self, message: str, *, retry_after_ms: int | None, provider: str | None = None, status_code: int = 429
    ) -> None:
        """Build the error; see :class:`ProviderError`."""
        super().__init__(
            message, retryable=True, retry_after_ms=retry_after_ms, provider=provider, status_code=status_code
        )
        self.postpone_ms = retry_after_ms if retry_after_ms is not None else self.DEFAULT_POSTPONE_MS


class LimitPostponed(AgentRunError):
    """A model call would exceed a configured limit (``AGENTQ_PROVIDER_LIMITS_JSON``, ``AGENTQ_ORG_TPM``,
    ``AGENTQ_ORG_LIMITS_JSON``) or the provider's reported one for longer than the worker waits: the task
    is postponed, its attempt kept. Not a :class:`ProviderError`: no request was made, so no fallback.

    Attributes:
        bucket: The bucket that is full, e.g. ``"openai:gpt-4o-mini"`` or ``"org:<uuid>"``.
        postpone_ms: How long to postpone: until the call's booked slot when ``booked``.
        postpone_cause: ``rpm``/``tpm`` (a model bucket), ``org_rpm``/``org_tpm``, ``provider`` (paused or
            shrunk by the provider's headers) or ``limiter_unavailable`` (Redis did not answer).
        booked: Whether a slot is held for the task in the bucket; such a postponement does not count
            toward ``AGENTQ_MAX_POSTPONES``: the task will run when it comes back.
    """

    retryable = True
    postpone_ms: int
    postpone_cause: str

    def __init__(self, message: str, *, bucket: str, postpone_ms: int, cause: str, booked: bool) -> None:
        """Build the error; see the class docstring."""
        super().__init__(message)
        self.bucket = bucket
        self.postpone_ms = postpone_ms
        self.postpone_cause = cause
        self.booked = booked
        self.counts_toward_max_postpones = not booked


class ProviderQuotaExceeded(ProviderError):
    """The account is out of credit (OpenAI's 429 ``insufficient_quota``); not retryable."""

    def __init__(self, message: str, *, provider: str | None = None, status_code: int = 429) -> None:
        """Build the error; see :class:`ProviderError`."""
        super().__init__(message, retryable=False, provider=provider, status_code=status_code)


class ProviderUnavailable(ProviderError):
    """A server error (5xx, 408, 409) or a connection failure; retryable."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        """Build the error; see :class:`ProviderError`."""
        super().__init__(
            message, retryable=True, retry_after_ms=retry_after_ms, provider=provider, status_code=status_code
        )


class ProviderTimeout(ProviderUnavailable):
    """The provider did not answer within the call's timeout; retryable.

    Attributes:
        timeout_s: The timeout that expired, in seconds.
    """

    def __init__(self, message: str, *, provider: str | None = None, timeout_s: float | None = None) -> None:
        """Build the error; see :class:`ProviderError`."""
        super().__init__(message, provider=provider)
        self.timeout_s = timeout_s


class ProviderAuthError(ProviderError):
    """The provider refused the credentials (HTTP 401 or 403); not retryable."""

    def __init__(self, message: str, *, provider: str | None = None, status_code: int | None = None) -> None:
        """Build the error; see :class:`ProviderError`."""
        super().__init__(message, retryable=False, provider=provider, status_code=status_code)


class ProviderInvalidRequest(ProviderError):
    """The provider refused the request itself (HTTP 400, 404, 422, other 4xx); not retryable."""

    def __init__(self, message: str, *, provider: str | None = None, status_code: int | None = None) -> None:
        """Build the error; see :class:`ProviderError`."""
        super().__init__(message, retryable=False, provider=provider, status_code=status_code)


class ProviderNotConfigured(ProviderError):
    """A provider was used without the settings it needs (an API key); not retryable.

    Attributes:
        variable: The setting to provide, e.g. ``OPENAI_API_KEY``.
    """

    def __init__(self, provider: str, variable: str) -> None:
        """Build the error.

        Args:
            provider: The provider's name.
            variable: The environment variable or setting that is missing.
        """
        self.variable = variable
        super().__init__(
            f"provider {provider!r} has no API key; set {variable} for the worker",
            retryable=False,
            provider=provider,
        )


class ScriptedNotAllowed(AgentRunError):
    """An agent uses the ``scripted`` provider in a worker that does not allow it; not retryable."""

    def __init__(self) -> None:
        """Build the error."""
        super().__init__(
            "provider 'scripted' is for the demo and tests only and is off in this worker;"
            " set AGENTQ_ALLOW_SCRIPTED=true to run it, or give the agent a real provider"
        )


class BaseUrlNotAllowed(AgentRunError):
    """An agent's ``base_url`` is not under an allowed prefix; not retryable, and no request is made.

    Attributes:
        agent: The agent, as ``'name' (id)``.
        url: The refused base URL.
    """

    def __init__(self, agent_id: str, agent_name: str, url: str, allowed: tuple[str, ...]) -> None:
        """Build the error.

        Args:
            agent_id: The agent's id.
            agent_name: The agent's name.
            url: The agent's base URL.
            allowed: The configured prefixes, for the hint.
        """
        self.agent = f"{short_repr(agent_name)} ({agent_id})"
        self.url = url
        now = ", ".join(short_repr(prefix) for prefix in allowed) if allowed else "empty"
        super().__init__(
            f"agent {self.agent} has base_url {short_repr(url)}, which AGENTQ_ALLOWED_BASE_URLS"
            f" (now {now}) does not allow; the platform's API key is sent only to allowed URLs."
            " Add the URL's prefix to AGENTQ_ALLOWED_BASE_URLS or clear the agent's base_url"
        )


class ToolTimeout(AgentRunError):
    """A tool ran longer than the agent's ``tool_timeout_s``.

    Retryable: a hung tool usually waits on something slow that may recover. The tool's
    thread cannot be killed; it is abandoned (a daemon thread) and its result ignored.

    Attributes:
        tool: The tool's name.
        seconds: The timeout that expired.
    """

    retryable = True

    def __init__(self, tool: str, seconds: float) -> None:
        """Build the error.

        Args:
            tool: The tool's name.
            seconds: The timeout that expired.
        """
        self.tool = tool
        self.seconds = seconds
        super().__init__(
            f"tool {short_repr(tool)} did not finish within tool_timeout_s={seconds:g}; "
            "raise the agent's tool_timeout_s or make the tool faster"
        )


class RunTimeLimitExceeded(AgentRunError):
    """The run went past the agent's ``run_time_limit_s``; not retryable.

    Attributes:
        seconds: The limit that was reached.
    """

    def __init__(self, seconds: float) -> None:
        """Build the error.

        Args:
            seconds: The limit that was reached.
        """
        self.seconds = seconds
        super().__init__(
            f"agent run exceeded run_time_limit_s={seconds:g}; raise the limit or simplify the task"
        )


class RunCancelled(AgentRunError):
    """The caller asked the run to stop (``should_stop`` returned True); not retryable.

    Distinct from a failure: the caller marks the task ``cancelled``.
    """

    cancels_task = True

    def __init__(self, where: str) -> None:
        """Build the error.

        Args:
            where: Where the run stopped, e.g. ``"before model call 2"``.
        """
        self.where = where
        super().__init__(f"agent run cancelled {where}")


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
