"""Rebuilding a run from its step ledger: the conversation so far, and where to go on.

:func:`rebuild` reads the steps of the current firing in ``seq`` order and checks that they form the
run the loop would have made: a model call, then one tool step per tool call it asked for, in order
(same tool name, same call id), then the next model call, and so on; only the last step may be
unfinished, or a tool call awaiting a person's approval (:mod:`orchestrator.approvals`). Whatever does
not fit (a gap, a tool where a model call belongs, an edited payload, steps after the final answer)
raises :class:`~orchestrator.ledger.LedgerMismatch`, so a corrupt conversation is never sent to a
provider. The ledger is the source of truth: tool call ids come from
the recorded model call, whatever a provider would answer now.

A completed model call stored clipped (a text over :data:`~orchestrator.ledger.MAX_STEP_TEXT_CHARS`)
cannot be replayed word for word, and a completed step is never made again: it is a mismatch too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from orchestrator.approvals import AWAITING_APPROVAL
from orchestrator.ledger import COMPLETED, FAILED, LLM, STARTED, TOOL, LedgerMismatch, RecordedStep
from orchestrator.messages import ModelResponse, ToolCall, Usage
from orchestrator.tools import ToolOutcome

__all__ = ["Replay", "ReplayedCall", "ReplayedTool", "rebuild"]

_USAGE_FIELDS = tuple(Usage().to_dict())


@dataclass(frozen=True)
class ReplayedCall:
    """A completed model call, as recorded.

    Attributes:
        seq: Its step.
        turn: Its turn (1 for the first model call).
        provider: The provider it was made on.
        model: The model it asked for (``response.model`` is the one that answered).
        response: The answer.
        cost_usd: Its cost, when known.
    """

    seq: int
    turn: int
    provider: str
    model: str
    response: ModelResponse
    cost_usd: Decimal | None


@dataclass(frozen=True)
class ReplayedTool:
    """A completed tool call, as recorded: the call (from its model call) and the result the model got."""

    seq: int
    turn: int
    call: ToolCall
    outcome: ToolOutcome


@dataclass
class Replay:
    """What the ledger says the run has done, and what comes next.

    Attributes:
        done: The completed steps, in order.
        open_call: The last completed model call, when its turn is not over: its final answer (no tool
            calls) or tool calls still to run.
        pending: The tool calls of ``open_call`` without a completed step, in order.
        unfinished: The step of ``pending[0]`` when it was started (or failed) and never completed: the
            tool may have run (unless it was a wait that ended: ``orchestrator.approvals.never_ran``).
        awaiting: The step of ``pending[0]`` when it waits for (or got) a person's approval: the tool has
            not run.
    """

    done: list[ReplayedCall | ReplayedTool] = field(default_factory=list)
    open_call: ReplayedCall | None = None
    pending: tuple[ToolCall, ...] = ()
    unfinished: RecordedStep | None = None
    awaiting: RecordedStep | None = None

    @property
    def next_seq(self) -> int:
        """The first step not completed: where the run goes on."""
        return len(self.done)

    @property
    def turns(self) -> int:
        """Model calls completed."""
        return sum(1 for step in self.done if isinstance(step, ReplayedCall))

    @property
    def final(self) -> ReplayedCall | None:
        """The completed final answer (a model call without tool calls), if the run got that far."""
        call = self.open_call
        return call if call is not None and not call.response.tool_calls else None


def rebuild(steps: Sequence[RecordedStep]) -> Replay:
    """The run the recorded ``steps`` describe (``seq`` order, the current firing's).

    Raises:
        LedgerMismatch: A step does not fit the run (see the module docstring).
    """
    replay = Replay()
    last = len(steps) - 1
    for index, step in enumerate(steps):
        if step.seq != index:
            raise LedgerMismatch(step.seq, f"expected step {index} here (steps are numbered 0, 1, 2, …)")
        if step.status not in (STARTED, COMPLETED, FAILED, AWAITING_APPROVAL):
            raise LedgerMismatch(index, f"unknown status '{step.status}'")
        if step.status != COMPLETED and index != last:
            raise LedgerMismatch(index, f"it is {step.status} but later steps exist")
        if replay.pending:
            _tool_step(replay, step)
        elif replay.open_call is not None and not replay.open_call.response.tool_calls:
            raise LedgerMismatch(index, "it comes after the final answer")
        else:
            _model_step(replay, step)
    return replay


def _model_step(replay: Replay, step: RecordedStep) -> None:
    if step.kind != LLM:
        raise LedgerMismatch(step.seq, f"a '{step.kind}' step where a model call belongs")
    if step.status == AWAITING_APPROVAL:
        raise LedgerMismatch(step.seq, "a model call awaiting approval (only tool calls wait for one)")
    if step.status != COMPLETED:
        return  # requested again
    output = _mapping(step.seq, step.output, "output")
    if output.get("clipped"):
        raise LedgerMismatch(
            step.seq, "the model call was stored clipped (a text too long to keep), so it cannot be replayed"
        )
    inputs = _mapping(step.seq, step.input, "input")
    call = ReplayedCall(
        seq=step.seq,
        turn=replay.turns + 1,
        provider=_text(step.seq, inputs, "provider"),
        model=_text(step.seq, inputs, "model"),
        response=_response(step.seq, output),
        cost_usd=_cost(step.seq, output.get("cost_usd")),
    )
    replay.done.append(call)
    replay.open_call = call
    replay.pending = call.response.tool_calls


def _tool_step(replay: Replay, step: RecordedStep) -> None:
    call = replay.pending[0]
    if step.kind != TOOL:
        raise LedgerMismatch(step.seq, f"a '{step.kind}' step where tool call {call.name!r} belongs")
    if step.name != call.name:
        raise LedgerMismatch(step.seq, f"tool {step.name!r} where the model called {call.name!r}")
    call_id = _mapping(step.seq, step.input, "input").get("call_id")
    if call_id != call.id:
        raise LedgerMismatch(step.seq, f"call id {call_id!r} where the model's call is {call.id!r}")
    assert replay.open_call is not None
    if step.status == AWAITING_APPROVAL:
        replay.awaiting = step
        return
    if step.status != COMPLETED:
        replay.unfinished = step
        return
    output = _mapping(step.seq, step.output, "output")
    content, is_error = output.get("content"), output.get("is_error")
    if not isinstance(content, str) or not isinstance(is_error, bool):
        raise LedgerMismatch(step.seq, "its output lacks the tool result ('content' text and 'is_error')")
    replay.done.append(ReplayedTool(step.seq, replay.open_call.turn, call, ToolOutcome(content, is_error)))
    replay.pending = replay.pending[1:]


def _mapping(seq: int, value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise LedgerMismatch(seq, f"its {what} is {type(value).__name__}, not an object")
    return value


def _text(seq: int, values: Mapping[str, Any], key: str, *, optional: bool = False) -> str:
    value = values.get(key)
    if isinstance(value, str) or (optional and value is None):
        return value  # type: ignore[return-value]
    raise LedgerMismatch(seq, f"{key!r} is {value!r}, not text")


def _response(seq: int, output: Mapping[str, Any]) -> ModelResponse:
    calls = output.get("tool_calls")
    if not isinstance(calls, list):
        raise LedgerMismatch(seq, f"'tool_calls' is {calls!r}, not a list")
    usage = output.get("usage")
    if not isinstance(usage, Mapping) or not all(
        isinstance(usage.get(name), int) and not isinstance(usage.get(name), bool) for name in _USAGE_FIELDS
    ):
        raise LedgerMismatch(seq, f"'usage' is {usage!r}, not the token counts")
    return ModelResponse(
        content=_text(seq, output, "content", optional=True),
        tool_calls=tuple(_tool_call(seq, call) for call in calls),
        usage=Usage(**{name: usage[name] for name in _USAGE_FIELDS}),
        model=_text(seq, output, "model"),
        finish_reason=_text(seq, output, "finish_reason"),
    )


def _tool_call(seq: int, value: object) -> ToolCall:
    call = _mapping(seq, value, "tool call")
    arguments = call.get("arguments")
    if not isinstance(arguments, Mapping):
        raise LedgerMismatch(seq, f"tool call arguments {arguments!r} are not an object")
    return ToolCall(
        id=_text(seq, call, "id"),
        name=_text(seq, call, "name"),
        arguments=dict(arguments),
        raw_arguments=_text(seq, call, "raw_arguments", optional=True),
        argument_error=_text(seq, call, "argument_error", optional=True),
    )


def _cost(seq: int, value: object) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise LedgerMismatch(seq, f"'cost_usd' {value!r} is not a number") from None
