"""The step ledger as the agent loop sees it: every model call and tool call, recorded as a step.

A run records each model call and each tool call as a step, numbered ``seq`` 0, 1, 2, … within the
task's current firing: :meth:`StepLedger.start` before the call, :meth:`StepLedger.complete` or
:meth:`StepLedger.fail` after it. When an attempt starts on a firing that already has completed
steps (a retry, a recovery after a crash, a postponement), the loop rebuilds the conversation from
them (:mod:`orchestrator.replay`) and continues after the last completed one: a completed model call
is never requested again and a completed tool call never executed again. The ledger belongs to the
caller (a worker keeps it in the task store); the loop knows only this protocol, so it stays free of
storage.

Payloads hold what a replay needs, exactly: a model call's text and tool calls, a tool call's
result. Each string is kept whole up to :data:`MAX_STEP_TEXT_CHARS` (five times the longest tool
result a model is given), and clipped beyond it with its length named, so a row is never unbounded;
a run cannot resume from a model call stored clipped (see :mod:`orchestrator.replay`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from config.redaction import redact
from orchestrator.errors import AgentRunError
from orchestrator.messages import ModelResponse, ToolCall
from orchestrator.tools import MAX_TOOL_OUTPUT_CHARS, ToolOutcome

__all__ = [
    "COMPLETED",
    "FAILED",
    "LLM",
    "MAX_STEP_TEXT_CHARS",
    "NO_LEDGER",
    "STARTED",
    "TOOL",
    "LedgerMismatch",
    "NoLedger",
    "RecordedStep",
    "StepLedger",
    "StepNotRecorded",
    "UnfinishedToolNotRepeated",
    "clip_payload",
    "describe_error",
    "model_input",
    "model_output",
    "tool_input",
    "tool_output",
]

#: Step kinds.
LLM, TOOL = "llm", "tool"
#: Step statuses.
STARTED, COMPLETED, FAILED = "started", "completed", "failed"
#: Longest string, in characters, a step's input or output keeps whole.
MAX_STEP_TEXT_CHARS = 5 * MAX_TOOL_OUTPUT_CHARS
#: Longest error text, in characters, a failed step keeps.
MAX_ERROR_CHARS = 2_000


class RecordedStep(Protocol):
    """A step as the ledger returns it (``taskstore.Step`` is one)."""

    @property
    def seq(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def input(self) -> Mapping[str, Any] | None: ...
    @property
    def output(self) -> Mapping[str, Any] | None: ...
    @property
    def error(self) -> str | None: ...


class StepLedger(Protocol):
    """Where one attempt records its steps. A write the ledger cannot make raises :class:`StepNotRecorded`.

    The run calls it from its event loop: ``steps``, ``resumed``, ``start`` of a model call and
    ``complete(last=True)`` are called there and must not block; ``start`` of a tool call, ``complete``,
    ``fail`` and ``await_approval`` (of an :class:`~orchestrator.approvals.ApprovalLedger`) may block: the run
    makes them on the loop's executor.
    """

    #: Stable for one firing of one task: the prefix of the tools' idempotency keys.
    scope: str

    def steps(self) -> Sequence[RecordedStep]:
        """The steps of the current firing so far, in ``seq`` order (read once, when the run starts)."""
        ...

    def start(self, seq: int, kind: str, name: str, input: Mapping[str, Any]) -> None:
        """Record step ``seq`` as started: before a model call (``name`` the model) or a tool call."""
        ...

    def complete(
        self,
        seq: int,
        output: Mapping[str, Any],
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | None = None,
        last: bool = False,
    ) -> None:
        """Record step ``seq`` as completed with its output (and, for a model call, its usage).

        ``last``: the run's final answer, after which the run only returns; the ledger may record it
        together with the run's own end instead of on its own."""
        ...

    def fail(self, seq: int, error: str) -> None:
        """Record step ``seq`` as failed (a provider error, a tool timeout)."""
        ...

    def resumed(self, replayed: Sequence[RecordedStep]) -> None:
        """Told once when a run resumes: ``replayed`` are the completed steps it will not repeat."""
        ...


class NoLedger:
    """Records nothing: every run starts from the first step (``AGENTQ_STEP_LEDGER=false``).

    Args:
        scope: The prefix of tool idempotency keys (the caller's ``<task id>:<firing>``).
    """

    def __init__(self, scope: str = "") -> None:
        self.scope = scope

    def steps(self) -> Sequence[RecordedStep]:
        return ()

    def start(self, seq: int, kind: str, name: str, input: Mapping[str, Any]) -> None:
        return None

    def complete(
        self,
        seq: int,
        output: Mapping[str, Any],
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | None = None,
        last: bool = False,
    ) -> None:
        return None

    def fail(self, seq: int, error: str) -> None:
        return None

    def resumed(self, replayed: Sequence[RecordedStep]) -> None:
        return None


#: A ledger that records nothing.
NO_LEDGER = NoLedger()


# --- errors -----------------------------------------------------------------------------------


class StepNotRecorded(AgentRunError):
    """The ledger could not record a step, so the run stops before the call it was about to make.

    ``retryable`` is the ledger's call: an unreachable store may come back (retry), a refused write
    means this attempt no longer holds the task (another worker took it over, or it was cancelled)
    and must not go on.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        """Build the error.

        Args:
            message: Which step, and why it was not recorded.
            retryable: Whether a later attempt may succeed.
        """
        self.retryable = retryable
        super().__init__(message)


class LedgerMismatch(AgentRunError):
    """A recorded step does not fit the run it should continue (an edited or corrupt ledger).

    Not retryable: the ledger would not change on its own. The run fails before any model request, so
    a corrupt conversation is never sent; ``retry_job`` (without ``resume``) starts the firing afresh.
    """

    def __init__(self, seq: int, problem: str) -> None:
        """Build the error.

        Args:
            seq: The step that does not fit.
            problem: What is wrong with it.
        """
        self.seq = seq
        super().__init__(
            f"step {seq} of the step ledger does not match this run: {problem}; the run was not resumed"
            " (retry the job without resume to start the firing afresh)"
        )


class UnfinishedToolNotRepeated(AgentRunError):
    """An earlier attempt started a tool that is not idempotent and never recorded its end; not retryable.

    The tool may have done its work (sent the invoice) before the worker died: running it again could
    do it twice, so the task fails instead.
    """

    def __init__(self, tool: str, seq: int) -> None:
        """Build the error.

        Args:
            tool: The tool's name.
            seq: Its step in the ledger.
        """
        self.tool = tool
        self.seq = seq
        super().__init__(
            f"tool {tool!r} may already have run; not repeated (step {seq} was started by an earlier"
            " attempt that never finished it). Declare the tool idempotent=True if running it twice is"
            " harmless, or set AGENTQ_REPEAT_UNFINISHED_TOOLS=true to repeat such calls"
        )


# --- payloads ---------------------------------------------------------------------------------


def clip_payload(value: Any) -> tuple[Any, bool]:
    """``value`` (JSON-like) with every string over :data:`MAX_STEP_TEXT_CHARS` clipped (its length named),
    and whether any was."""
    if isinstance(value, str):
        if len(value) <= MAX_STEP_TEXT_CHARS:
            return value, False
        rest = len(value) - MAX_STEP_TEXT_CHARS
        return value[:MAX_STEP_TEXT_CHARS] + f"... [{rest} more chars; {len(value)} in total]", True
    if isinstance(value, Mapping):
        clipped = False
        result: dict[str, Any] = {}
        for key, item in value.items():
            result[str(key)], was = clip_payload(item)
            clipped = clipped or was
        return result, clipped
    if isinstance(value, list | tuple):
        items = [clip_payload(item) for item in value]
        return [item for item, _ in items], any(was for _, was in items)
    return value, False


def model_input(turn: int, provider: str, model: str) -> dict[str, Any]:
    """A model call's step input: which turn, on which provider and model."""
    return {"turn": turn, "provider": provider, "model": model}


def model_output(provider: str, response: ModelResponse, cost_usd: Decimal | None) -> dict[str, Any]:
    """A completed model call's step output: everything the conversation needs to go on without it."""
    output = {
        "provider": provider,
        "model": response.model,
        "content": response.content,
        "tool_calls": [
            {
                "id": call.id,
                "name": call.name,
                "arguments": call.arguments,
                "raw_arguments": call.raw_arguments,
                "argument_error": call.argument_error,
            }
            for call in response.tool_calls
        ],
        "finish_reason": response.finish_reason,
        "usage": response.usage.to_dict(),
        "cost_usd": None if cost_usd is None else str(cost_usd),
    }
    clipped, was = clip_payload(output)
    if was:
        clipped["clipped"] = True
    return clipped  # type: ignore[no-any-return]


def tool_input(turn: int, call: ToolCall, idempotency_key: str) -> dict[str, Any]:
    """A tool call's step input: its call id, arguments (as the model sent them) and idempotency key."""
    arguments: Any = call.arguments if call.raw_arguments is None else call.raw_arguments
    payload, _ = clip_payload(
        {"turn": turn, "call_id": call.id, "arguments": arguments, "idempotency_key": idempotency_key}
    )
    return payload  # type: ignore[no-any-return]


def tool_output(outcome: ToolOutcome) -> dict[str, Any]:
    """A completed tool call's step output: the result the model was given."""
    payload, _ = clip_payload({"content": outcome.content, "is_error": outcome.is_error})
    return payload  # type: ignore[no-any-return]


def describe_error(error: BaseException) -> str:
    """A failed step's error text: the error's type and message, secrets redacted, at most
    :data:`MAX_ERROR_CHARS` characters."""
    text = redact(f"{type(error).__name__}: {error}")
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + f"… ({len(text)} characters)"
