"""The agent loop: model → tool calls → tool results → … → final answer.

The loop is provider-agnostic and knows nothing of queues or storage: it takes an
:class:`AgentSpec` and a :class:`TaskInput` and returns an :class:`AgentResult`, or raises
an :class:`~orchestrator.errors.AgentRunError` carrying the usage, transcript and cost so
far. A tool outside ``allowed_tools`` is never executed: the model receives an error result
and a warning is logged.

Limits: ``max_turns`` model calls; ``tool_timeout_s`` per tool call (the tool runs in a
daemon thread, abandoned when it hangs); ``run_time_limit_s`` checked before every model and
tool call and passed to the provider as the call's timeout, so a slow answer that runs past
the limit ends the run with :class:`RunTimeLimitExceeded` (not retryable), while a provider
timeout that leaves run time over is a retryable :class:`ProviderTimeout`.

Fallback: when a model call fails with a *retryable* :class:`ProviderError` (rate limit
included: a rate-limited primary is when a fallback helps most) and the agent has a
``fallback_provider`` or ``fallback_model``, the same turn is retried once on the fallback
and the run stays there; a ``{"type": "fallback"}`` transcript entry records the switch.
Non-retryable errors (authentication, invalid request) never fall back: they are
configuration mistakes to fix, not to hide. If the fallback fails too, its error ends the run.

Steps: with a :class:`~orchestrator.ledger.StepLedger`, every model call and tool call is recorded
as a step (``started`` before, ``completed``/``failed`` after), and a run that finds completed steps
of its firing resumes after them (:mod:`orchestrator.replay`): their calls are not made again, nor
are hooks called for them, and the run's usage and cost count only the calls it makes itself (the
earlier attempts' runs recorded theirs). A tool step left unfinished by an earlier attempt is run
again only when the tool is idempotent or ``repeat_unfinished_tools`` is set; otherwise the run fails
with :class:`~orchestrator.ledger.UnfinishedToolNotRepeated`.

Approvals: a call of a tool declared ``requires_approval`` or named in the agent's ``approval_tools`` is
recorded as awaiting a person's approval and the run stops with
:class:`~orchestrator.approvals.ApprovalRequired` (the task waits); resumed after an approval it runs the
tool once, after a rejection the model reads the reason as the tool's result.

Cancelling: with a :class:`~orchestrator.cancel.CancelSignal` the run stops within moments of the signal,
also in the middle of a model call (abandoned) or a tool call (told through ``ToolContext.cancelled``,
not waited for); the interrupted step is recorded failed with ``"cancelled"``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from config.errors import short_repr
from orchestrator.approvals import (
    APPROVED,
    ApprovalLedger,
    ApprovalRequired,
    ApprovalsNeedLedger,
    decision_of,
    never_ran,
)
from orchestrator.cancel import CancelSignal, until_cancelled
from orchestrator.errors import (
    AgentRunError,
    BaseUrlNotAllowed,
    InvalidAgentSpec,
    MaxTurnsExceeded,
    ProviderError,
    ProviderTimeout,
    RunCancelled,
    RunTimeLimitExceeded,
    ToolTimeout,
    UnknownProvider,
    UnknownTool,
)
from orchestrator.event_loop import offload, process_loop
from orchestrator.hooks import OrchestratorHooks, call_hook
from orchestrator.ledger import (
    LLM,
    NO_LEDGER,
    TOOL,
    NoLedger,
    StepLedger,
    UnfinishedToolNotRepeated,
    describe_error,
    model_input,
    model_output,
    tool_input,
    tool_output,
)
from orchestrator.limits.base import NO_LIMITS, CallLimiter
from orchestrator.messages import ChatMessage, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from orchestrator.pricing import PriceTable
from orchestrator.providers.base import call_provider
from orchestrator.providers.base_urls import BaseUrlPolicy
from orchestrator.providers.registry import ProviderRegistry
from orchestrator.replay import Replay, ReplayedCall, rebuild
from orchestrator.tools import ToolContext, ToolOutcome, ToolRegistry, default_registry

__all__ = [
    "MAX_TRANSCRIPT_CHARS",
    "AgentResult",
    "AgentSpec",
    "Orchestrator",
    "TaskInput",
    "build_user_message",
]

logger = logging.getLogger("orchestrator")
T = TypeVar("T")
#: What a run asks before each step whether it must stop: a function returning a bool or an awaitable one.
StopCheck = Callable[[], bool | Awaitable[bool]]

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
        provider: The provider name (e.g. ``"scripted"``, ``"openai"``, ``"anthropic"``).
        model: The model name, as the provider knows it.
        system_prompt: The system prompt, if any.
        allowed_tools: The only tools this agent may run.
        temperature: Sampling temperature, or None for the provider default.
        max_tokens: Output token limit per call, or None for the provider default.
        max_turns: The most model calls one run may make (at least 1).
        base_url: This agent's API base URL for its own provider (any OpenAI-compatible
            server), or None for the provider's configured one.
        tool_timeout_s: Longest one tool call may run, in seconds.
        run_time_limit_s: Longest the whole run may take, in seconds, or None for no limit.
            Checked between steps; it also bounds each model call and tool call.
        fallback_provider: Provider to switch to when a model call fails with a retryable
            error; None means the same provider (with ``fallback_model``).
        fallback_model: Model to switch to; None means the same model. No fallback when
            both are None.
        stream: Stream the model's output (``llm_delta`` events) while it is generated.
        approval_tools: Tools whose calls wait for a person's approval before they run (besides tools
            declared ``requires_approval``).
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
    base_url: str | None = None
    tool_timeout_s: float = 30.0
    run_time_limit_s: float | None = None
    fallback_provider: str | None = None
    fallback_model: str | None = None
    stream: bool = False
    approval_tools: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Reject settings that cannot run."""
        if self.max_turns < 1:
            raise InvalidAgentSpec(
                f"agent {short_repr(self.name)}: max_turns must be at least 1, got {self.max_turns}"
            )
        if not self.tool_timeout_s > 0:
            raise InvalidAgentSpec(
                f"agent {short_repr(self.name)}: tool_timeout_s must be positive, got {self.tool_timeout_s}"
            )
        if self.run_time_limit_s is not None and not self.run_time_limit_s > 0:
            raise InvalidAgentSpec(
                f"agent {short_repr(self.name)}: run_time_limit_s must be positive or None,"
                f" got {self.run_time_limit_s}"
            )

    @property
    def has_fallback(self) -> bool:
        """Whether a fallback provider or model is configured."""
        return self.fallback_provider is not None or self.fallback_model is not None


@dataclass(frozen=True)
class TaskInput:
    """The task an agent works on.

    Attributes:
        id: The task's id.
        title: A one-line summary; the first line of the user message.
        description: Details, if any.
        context: Extra data, shown to the model as JSON (except hidden keys such as ``script``).
        organization_id: The task's organization (its token quota applies to the run's model calls).
    """

    id: str
    title: str
    description: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    organization_id: str | None = None


@dataclass(frozen=True)
class AgentResult:
    """The outcome of a successful run.

    Attributes:
        output: The final answer.
        turns: Model calls made.
        usage: Tokens used over all calls.
        transcript: One JSON-friendly dict per model call, per tool call and per
            fallback switch, strings clipped; model entries carry their ``cost_usd``.
        model: The model that gave the final answer.
        cost_usd: The run's cost, or None when any call's model has no known price.
        provider: The provider that gave the final answer.
    """

    output: str
    turns: int
    usage: Usage
    transcript: tuple[dict[str, Any], ...]
    model: str
    cost_usd: Decimal | None = None
    provider: str = ""


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


def _model_entry(turn: int, provider: str, response: ModelResponse, cost: Decimal | None) -> dict[str, Any]:
    return {
        "type": "model",
        "turn": turn,
        "provider": provider,
        "model": response.model,
        "content": _clip(response.content),
        "tool_calls": [
            _clip({"id": c.id, "name": c.name, "arguments": c.arguments}) for c in response.tool_calls
        ],
        "usage": response.usage.to_dict(),
        "cost_usd": None if cost is None else str(cost),
        "finish_reason": response.finish_reason,
    }


def _tool_entry(turn: int, call: ToolCall, outcome: ToolOutcome) -> dict[str, Any]:
    return {
        "type": "tool",
        "turn": turn,
        "name": call.name,
        "call_id": call.id,
        "arguments": _clip(call.arguments if call.raw_arguments is None else call.raw_arguments),
        "result": _clip(outcome.content),
        "is_error": outcome.is_error,
    }


def _tool_message(call: ToolCall, outcome: ToolOutcome) -> ChatMessage:
    return ChatMessage(role="tool", content=outcome.content, tool_call_id=call.id, is_error=outcome.is_error)


class Orchestrator:
    """Runs agents on tasks. One instance serves many runs at once (on the process's event loop).

    Args:
        providers: Where providers are looked up; None means a default
            :class:`ProviderRegistry` (the ``scripted`` provider).
        tools: Where tools are looked up; None means :func:`default_registry`.
        prices: Model prices for ``cost_usd``; None means :class:`PriceTable` defaults.
        hooks: Hooks called by every run (a run's own ``hooks`` replace them).
        clock: Monotonic clock in seconds, for the run time limit; tests pass a fake.
        base_urls: The base URLs an agent's own ``base_url`` may use; None allows none (an agent
            with a ``base_url`` then fails with :class:`BaseUrlNotAllowed` before any request).
        repeat_unfinished_tools: On resume, run again a tool call an earlier attempt started and
            never finished even when the tool is not idempotent (``AGENTQ_REPEAT_UNFINISHED_TOOLS``).
        limiter: Admits each model call (``orchestrator.limits``); None: no limits.
    """

    def __init__(
        self,
        providers: ProviderRegistry | None = None,
        tools: ToolRegistry | None = None,
        *,
        prices: PriceTable | None = None,
        hooks: OrchestratorHooks | None = None,
        clock: Callable[[], float] = time.monotonic,
        base_urls: BaseUrlPolicy | None = None,
        repeat_unfinished_tools: bool = False,
        limiter: CallLimiter | None = None,
    ) -> None:
        """Create an orchestrator; see the class docstring."""
        self.providers = providers if providers is not None else ProviderRegistry()
        self.tools = tools if tools is not None else default_registry()
        self.prices = prices if prices is not None else PriceTable()
        self.hooks = hooks if hooks is not None else OrchestratorHooks()
        self.clock = clock
        self.base_urls = base_urls if base_urls is not None else BaseUrlPolicy()
        self.repeat_unfinished_tools = repeat_unfinished_tools
        self.limiter = limiter if limiter is not None else NO_LIMITS

    def run(
        self,
        agent: AgentSpec,
        task: TaskInput,
        *,
        should_stop: StopCheck | None = None,
        hooks: OrchestratorHooks | None = None,
        ledger: StepLedger = NO_LEDGER,
        cancel: CancelSignal | None = None,
    ) -> AgentResult:
        """:meth:`arun` on the process's event loop, waited for in this thread (for sync callers)."""
        return process_loop().run(
            self.arun(agent, task, should_stop=should_stop, hooks=hooks, ledger=ledger, cancel=cancel)
        )

    async def arun(
        self,
        agent: AgentSpec,
        task: TaskInput,
        *,
        should_stop: StopCheck | None = None,
        hooks: OrchestratorHooks | None = None,
        ledger: StepLedger = NO_LEDGER,
        cancel: CancelSignal | None = None,
    ) -> AgentResult:
        """Run the agent on the task until it gives a final answer (on the running event loop).

        Args:
            agent: The agent to run.
            task: The task to work on.
            should_stop: Checked before each model call and each tool call; when it
                returns True (or an awaitable of True) the run ends with :class:`RunCancelled`.
            hooks: Hooks for this run; None means the orchestrator's.
            ledger: Where the run records its steps and finds those of earlier attempts at the
                same firing (resuming after them); the default records nothing.
            cancel: Set (from any thread) when the run must stop now: an in-flight model call is
                abandoned, a running tool is told and not waited for (see :mod:`orchestrator.cancel`).

        Returns:
            The final answer, the turns of the whole firing, this run's usage and cost, and the
            transcript (replayed steps included, marked ``"replayed": true``).

        Raises:
            AgentRunError: Any failure; it carries ``usage``, ``transcript`` and ``cost_usd``
                so far. Among them: UnknownProvider, ProviderError (and subclasses; see
                ``retryable`` and ``postpone_ms``), MaxTurnsExceeded, ToolTimeout,
                RunTimeLimitExceeded, RunCancelled, ScriptError, and from the ledger
                StepNotRecorded, LedgerMismatch, UnfinishedToolNotRepeated. ApprovalRequired is no
                failure: the run waits for a person (``awaits_approval``).
        """
        run = _Run(self, agent, task, should_stop, hooks if hooks is not None else self.hooks, ledger)
        run.cancel = cancel
        call_hook(run.hooks.on_run_start, agent, task)
        try:
            result = await run.execute()
        except AgentRunError as exc:
            exc.record_run(run.usage, list(run.transcript), run.cost)
            call_hook(run.hooks.on_run_end, None, exc)
            raise
        except BaseException as exc:
            call_hook(run.hooks.on_run_end, None, exc)
            raise
        call_hook(run.hooks.on_run_end, result, None)
        return result


class _Run:
    """The state of one run: conversation, usage, cost, deadline, current provider and next step."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        agent: AgentSpec,
        task: TaskInput,
        should_stop: StopCheck | None,
        hooks: OrchestratorHooks,
        ledger: StepLedger,
    ) -> None:
        self.orchestrator = orchestrator
        self.agent = agent
        self.task = task
        self.should_stop = should_stop
        self.hooks = hooks
        self.ledger = ledger
        #: The next step's number; the model calls of the firing so far.
        self.seq = self.turns = 0
        self.clock = orchestrator.clock
        limit = agent.run_time_limit_s
        self.deadline = None if limit is None else self.clock() + limit
        self.provider_name = agent.provider
        self.model = agent.model
        self.base_url = agent.base_url
        self.switched = False
        self.messages: list[ChatMessage] = [ChatMessage(role="user", content=build_user_message(task))]
        self.transcript: list[dict[str, Any]] = []
        self.usage = Usage()
        self.cost: Decimal | None = Decimal(0)
        #: Set when the run must stop now (see :mod:`orchestrator.cancel`).
        self.cancel: CancelSignal | None = None
        #: The model's text in the turn whose tool calls run now (shown with an approval request).
        self.reasoning: str | None = None
        #: Steps earlier attempts left waiting or unfinished, by ``seq``: their approval decisions.
        self.recorded_steps: dict[int, object] = {}
        #: Whether the ledger's writes reach a store (then they are made on the loop's executor).
        self.ledger_blocks = not isinstance(ledger, NoLedger)

    # -- limits ------------------------------------------------------------------------------

    def time_left(self) -> float | None:
        """Seconds left before the run time limit, or None without a limit."""
        return None if self.deadline is None else self.deadline - self.clock()

    async def check(self, where: str) -> None:
        """Raise RunCancelled or RunTimeLimitExceeded when the run must not go on."""
        if (self.cancel is not None and self.cancel.is_set()) or await self.stop_asked():
            raise RunCancelled(where)
        left = self.time_left()
        if left is not None and left <= 0:
            raise RunTimeLimitExceeded(self.agent.run_time_limit_s or 0)

    async def stop_asked(self) -> bool:
        if self.should_stop is None:
            return False
        answer = self.should_stop()
        return bool(await answer) if inspect.isawaitable(answer) else bool(answer)

    async def write(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A ledger write: on the loop's executor when it reaches a store (it may block), else here."""
        if self.ledger_blocks:
            return await offload(call, *args, **kwargs)
        return call(*args, **kwargs)

    def check_base_url(self) -> None:
        """Raise BaseUrlNotAllowed when the agent's own base URL is not allowed (before any request)."""
        agent, policy = self.agent, self.orchestrator.base_urls
        if agent.base_url is not None and not policy.allows(agent.base_url):
            raise BaseUrlNotAllowed(agent.id, agent.name, agent.base_url, policy.prefixes)

    # -- the loop ----------------------------------------------------------------------------

    async def execute(self) -> AgentResult:
        self.check_base_url()
        fallback = self.agent.fallback_provider
        if fallback is not None and fallback not in self.orchestrator.providers:
            raise UnknownProvider(fallback, self.orchestrator.providers.names())
        specs = self.orchestrator.tools.specs(self.agent.allowed_tools)
        replay = self.resume()
        if replay is not None and replay.open_call is not None:
            if replay.final is not None:  # the answer was recorded; only the task's end was not
                return self.result(replay.final.response)
            self.check_unfinished(replay)
            await self.run_tools(replay.open_call.turn, replay.pending)
        while self.turns < self.agent.max_turns:
            turn = self.turns + 1
            await self.check(f"before model call {turn}")
            response = await self.call_model(turn, specs)
            if not response.tool_calls:
                return self.result(response)
            self.messages.append(
                ChatMessage(role="assistant", content=response.content or "", tool_calls=response.tool_calls)
            )
            self.reasoning = response.content
            await self.run_tools(turn, response.tool_calls)
        raise MaxTurnsExceeded(self.agent.max_turns)

    def result(self, response: ModelResponse) -> AgentResult:
        return AgentResult(
            output=response.content or "",
            turns=self.turns,
            usage=self.usage,
            transcript=tuple(self.transcript),
            model=response.model,
            cost_usd=self.cost,
            provider=self.provider_name,
        )

    def record(self, turn: int, response: ModelResponse, cost: Decimal | None) -> None:
        self.usage += response.usage
        self.cost = None if cost is None or self.cost is None else self.cost + cost
        self.transcript.append(_model_entry(turn, self.provider_name, response, cost))
        logger.debug(
            "agent %s task %s turn %s: %s tool call(s)",
            self.agent.name,
            self.task.id,
            turn,
            len(response.tool_calls),
        )

    async def recorded(self, seq: int, call: Awaitable[T]) -> T:
        """``await call``; if it raises, step ``seq`` is recorded failed (best effort), the error raised."""
        try:
            return await call
        except Exception as exc:
            try:
                error = "cancelled" if isinstance(exc, RunCancelled) else describe_error(exc)
                await self.write(self.ledger.fail, seq, error)
            except Exception as ledger_error:  # the call's own error is the one that ends the run
                logger.warning(
                    "task %s: step %s failed and could not be recorded: %s", self.task.id, seq, ledger_error
                )
            raise

    # -- resuming ----------------------------------------------------------------------------

    def resume(self) -> Replay | None:
        """Take over the completed steps of earlier attempts at this firing; None when there are none."""
        steps = self.ledger.steps()
        if not steps:
            return None
        replay = rebuild(steps)
        for step in replay.done:
            if isinstance(step, ReplayedCall):
                self.replay_call(step)
            else:
                self.transcript.append({**_tool_entry(step.turn, step.call, step.outcome), "replayed": True})
                self.messages.append(_tool_message(step.call, step.outcome))
        self.seq = replay.next_seq
        if replay.open_call is not None:
            self.reasoning = replay.open_call.response.content
        for left in (replay.awaiting, replay.unfinished):
            if left is not None:
                self.recorded_steps[left.seq] = left
        if replay.done:
            self.ledger.resumed(steps[: replay.next_seq])
            logger.info(
                "agent %s task %s: resuming after %s completed step(s), which are not repeated",
                self.agent.name,
                self.task.id,
                replay.next_seq,
            )
        return replay

    def replay_call(self, step: ReplayedCall) -> None:
        self.turns = step.turn
        self.restore_provider(step.provider, step.model)
        self.transcript.append(
            {**_model_entry(step.turn, step.provider, step.response, step.cost_usd), "replayed": True}
        )
        if step.response.tool_calls:
            content = step.response.content or ""
            self.messages.append(
                ChatMessage(role="assistant", content=content, tool_calls=step.response.tool_calls)
            )

    def restore_provider(self, provider: str, model: str) -> None:
        """Go on where a replayed call ran: on the fallback if it had switched to it."""
        agent = self.agent
        on_fallback = (agent.fallback_provider or agent.provider, agent.fallback_model or agent.model)
        if agent.has_fallback and (provider, model) == on_fallback != (agent.provider, agent.model):
            if provider != agent.provider:
                self.base_url = None
            self.provider_name, self.model, self.switched = provider, model, True

    def check_unfinished(self, replay: Replay) -> None:
        """Refuse to repeat a tool call an earlier attempt left unfinished, unless that is harmless."""
        step = replay.unfinished
        if step is None or never_ran(step):
            return
        call, tools = replay.pending[0], self.orchestrator.tools
        runs = call.name in self.agent.allowed_tools and call.argument_error is None and call.name in tools
        if not runs or tools.get(call.name).idempotent:
            return  # never executed (the model was told why), or harmless to run again
        if not self.orchestrator.repeat_unfinished_tools:
            raise UnfinishedToolNotRepeated(call.name, step.seq)
        logger.warning(
            "task %s: tool %r of step %s may already have run; repeating it (AGENTQ_REPEAT_UNFINISHED_TOOLS)",
            self.task.id,
            call.name,
            step.seq,
        )

    # -- model calls -------------------------------------------------------------------------

    async def call_model(self, turn: int, specs: tuple[ToolSpec, ...]) -> ModelResponse:
        """One model call, retried once on the fallback after a retryable provider error."""
        try:
            return await self.model_step(turn, specs)
        except ProviderError as exc:
            if not exc.retryable or self.switched or not self.agent.has_fallback:
                raise
            self.switch_to_fallback(turn, exc)
        await self.check(f"before fallback model call {turn}")
        return await self.model_step(turn, specs)

    async def model_step(self, turn: int, specs: tuple[ToolSpec, ...]) -> ModelResponse:
        """The model call of ``turn`` as step ``seq``: recorded started, made, counted, recorded completed."""
        seq = self.seq
        self.ledger.start(seq, LLM, self.model, model_input(turn, self.provider_name, self.model))
        response = await self.recorded(seq, self.complete(specs))
        cost = self.orchestrator.prices.cost(response.model or self.model, response.usage)
        self.record(turn, response, cost)
        usage = response.usage
        output = model_output(self.provider_name, response, cost)
        complete = partial(
            self.ledger.complete,
            seq,
            output,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
        )
        if response.tool_calls:
            await self.write(complete)
        else:  # the final answer: the ledger keeps it for the task's completion (no write of its own)
            complete(last=True)
        self.seq, self.turns = seq + 1, turn
        return response

    def switch_to_fallback(self, turn: int, error: ProviderError) -> None:
        agent = self.agent
        to_provider = agent.fallback_provider or agent.provider
        to_model = agent.fallback_model or agent.model
        logger.warning(
            "agent %s task %s: %s/%s failed (%s); switching to fallback %s/%s",
            agent.name,
            self.task.id,
            self.provider_name,
            self.model,
            error,
            to_provider,
            to_model,
        )
        self.transcript.append(
            {
                "type": "fallback",
                "turn": turn,
                "from_provider": self.provider_name,
                "from_model": self.model,
                "to_provider": to_provider,
                "to_model": to_model,
                "error": _clip(str(error)),
            }
        )
        if to_provider != agent.provider:
            self.base_url = None  # the agent's base URL belongs to its primary provider
        self.provider_name, self.model, self.switched = to_provider, to_model, True

    async def complete(self, specs: tuple[ToolSpec, ...]) -> ModelResponse:
        provider = self.orchestrator.providers.get(self.provider_name)
        agent = self.agent
        request = ModelRequest(
            model=self.model,
            system_prompt=agent.system_prompt,
            messages=tuple(self.messages),
            tools=specs,
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
            context=self.task.context,
            base_url=self.base_url,
            timeout_s=self.time_left(),
            on_delta=(lambda text: call_hook(self.hooks.on_llm_delta, text, provider=self.provider_name))
            if agent.stream
            else None,
        )
        limiter = self.orchestrator.limiter
        limited = limiter is not NO_LIMITS
        if limited:  # Redis calls, and maybe a short wait for a slot
            permit = await offload(limiter.acquire, self.provider_name, request, self.task)
        else:
            permit = limiter.acquire(self.provider_name, request, self.task)
        if request.timeout_s is not None:  # the limiter may have waited: the call gets the time left now
            request = replace(request, timeout_s=self.time_left())
        call_hook(self.hooks.on_llm_start, request, provider=self.provider_name)
        try:
            response = await until_cancelled(call_provider(provider, request), self.cancel, "the model call")
        except BaseException as exc:
            if limited:
                await asyncio.shield(offload(permit.settle, error=exc))
            else:
                permit.settle(error=exc)
            call_hook(self.hooks.on_llm_end, request, None, exc, provider=self.provider_name)
            left = self.time_left()
            if isinstance(exc, ProviderTimeout) and left is not None and left <= 0:
                raise RunTimeLimitExceeded(agent.run_time_limit_s or 0) from exc
            raise
        if limited:
            await offload(permit.settle, response=response)
        else:
            permit.settle(response=response)
        call_hook(self.hooks.on_llm_end, request, response, None, provider=self.provider_name)
        return response

    # -- tool calls --------------------------------------------------------------------------

    async def run_tools(self, turn: int, calls: tuple[ToolCall, ...]) -> None:
        for call in calls:
            await self.check(f"before tool call {short_repr(call.name)} in turn {turn}")
            outcome = await self.tool_step(turn, call)
            self.transcript.append(_tool_entry(turn, call, outcome))
            self.messages.append(_tool_message(call, outcome))

    async def tool_step(self, turn: int, call: ToolCall) -> ToolOutcome:
        """One tool call as step ``seq``: recorded started, run with its idempotency key, then completed."""
        seq = self.seq
        cancelled = self.cancel if self.cancel is not None else threading.Event()
        context = ToolContext(self.task.id, seq, f"{self.ledger.scope or self.task.id}:{seq}", cancelled)
        await self.gate(seq, turn, call, context.idempotency_key)
        started = tool_input(turn, call, context.idempotency_key)
        await self.write(self.ledger.start, seq, TOOL, call.name, started)
        outcome = await self.recorded(seq, self.run_tool(call, context))
        await self.write(self.ledger.complete, seq, tool_output(outcome))
        self.seq = seq + 1
        return outcome

    def needs_approval(self, call: ToolCall) -> bool:
        """Whether the call waits for a person: a call that would run (allowed, known tool, valid arguments)
        of a tool declared ``requires_approval`` or named in the agent's ``approval_tools``."""
        agent, tools = self.agent, self.orchestrator.tools
        if call.name not in agent.allowed_tools or call.argument_error is not None or call.name not in tools:
            return False
        return tools.get(call.name).requires_approval or call.name in agent.approval_tools

    async def gate(self, seq: int, turn: int, call: ToolCall, key: str) -> None:
        """Let the call of step ``seq`` run if it needs no approval or was approved; otherwise record it as
        awaiting approval and stop the run (:class:`ApprovalRequired`)."""
        if not self.needs_approval(call):
            return
        recorded = self.recorded_steps.get(seq)
        if recorded is not None and decision_of(recorded) == APPROVED:
            approval = getattr(recorded, "approval", None) or {}
            self.transcript.append(
                {
                    "type": "approval",
                    "turn": turn,
                    "name": call.name,
                    "call_id": call.id,
                    "decision": APPROVED,
                    "decided_by": approval.get("decided_by"),
                    "note": _clip(approval.get("note")),
                }
            )
            return
        ledger = self.ledger
        if not isinstance(ledger, ApprovalLedger):
            raise ApprovalsNeedLedger(call.name)
        request = {**tool_input(turn, call, key), "reasoning": _clip(self.reasoning)}
        await self.write(ledger.await_approval, seq, call.name, request)
        self.transcript.append(
            {
                "type": "approval",
                "turn": turn,
                "name": call.name,
                "call_id": call.id,
                "arguments": _clip(call.arguments),
                "decision": None,
            }
        )
        logger.info(
            "agent %s task %s: tool %r (step %s) awaits a person's approval", self.agent.name, self.task.id,
            call.name, seq,
        )  # fmt: skip
        raise ApprovalRequired(call.name, seq, call.arguments)

    async def run_tool(self, call: ToolCall, context: ToolContext) -> ToolOutcome:
        """Run one tool call (never one the agent may not use), bounded by ``tool_timeout_s``."""
        call_hook(self.hooks.on_tool_start, call)
        try:
            outcome = await self.tool_outcome(call, context)
        except BaseException as exc:
            call_hook(self.hooks.on_tool_end, call, None, exc)
            raise
        call_hook(self.hooks.on_tool_end, call, outcome, None)
        return outcome

    async def tool_outcome(self, call: ToolCall, context: ToolContext) -> ToolOutcome:
        agent, tools = self.agent, self.orchestrator.tools
        if call.name not in agent.allowed_tools:
            logger.warning(
                "agent %s (%s) tried tool %r, which it is not allowed to use, in task %s; not executed",
                agent.name,
                agent.id,
                call.name,
                self.task.id,
            )
            return ToolOutcome(f"tool '{call.name}' is not allowed for this agent", is_error=True)
        if call.argument_error is not None:
            return ToolOutcome(
                f"invalid arguments for tool {short_repr(call.name)}: {call.argument_error}", is_error=True
            )
        if call.name not in tools:
            return ToolOutcome(str(UnknownTool(call.name)), is_error=True)
        return await self.execute_with_timeout(call, context)

    async def execute_with_timeout(self, call: ToolCall, context: ToolContext) -> ToolOutcome:
        """Run the tool, bounded by ``tool_timeout_s`` and the run's time left: an async tool on this loop
        (cancelled when it runs over), a sync one in a daemon thread (abandoned, never joined, when it hangs).
        Once the run is cancelled it is not waited for: the call ends :class:`RunCancelled` (also when the
        tool, told through ``context.cancelled``, returned early)."""
        limit = self.agent.tool_timeout_s
        left = self.time_left()
        bound = limit if left is None else min(limit, left)
        tools = self.orchestrator.tools
        if tools.get(call.name).is_async:
            work: Awaitable[ToolOutcome] = tools.aexecute(call.name, call.arguments, context=context)
        else:
            run = partial(tools.execute, call.name, call.arguments, context=context)
            work = _in_daemon_thread(run, call.name)
        what = f"tool call {short_repr(call.name)}"
        try:
            outcome = await asyncio.wait_for(until_cancelled(work, self.cancel, what), max(bound, 0))
        except TimeoutError:
            if left is not None and left < limit:
                raise RunTimeLimitExceeded(self.agent.run_time_limit_s or 0) from None
            raise ToolTimeout(call.name, limit) from None
        if self.cancel is not None and self.cancel.is_set():  # stopped early when told
            raise RunCancelled(f"during {what}")
        return outcome


def _in_daemon_thread(call: Callable[[], T], name: str) -> asyncio.Future[T]:
    """``call()`` in a new daemon thread (in a copy of this context); its result as a future of this loop.
    Nothing waits for the thread: cancelling the future abandons it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            value = context.run(call)
        except BaseException as exc:  # handed to the run
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, value)

    threading.Thread(target=target, name=f"tool-{name}", daemon=True).start()
    return future
