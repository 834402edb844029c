"""What one attempt produced: plain values shared by the agent-kind actors and the middleware.

An agent kind's actor **returns** an :class:`AttemptResult`; Dramatiq passes that return
value as ``result`` to ``after_process_message``, where ``TaskLifecycle`` stores it. A run
that fails raises an :class:`~orchestrator.errors.AgentRunError`, whose typed ``usage``,
``transcript`` and ``cost_usd`` say what the run did before failing (:func:`usage_of`,
:func:`transcript_of`). See docs/architecture.md, *One task's path*.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from orchestrator import messages
from orchestrator.errors import AgentRunError
from taskstore import StepRecord, Usage


class AttemptResult(dict[str, Any]):
    """What an agent kind returns: the task's result (this mapping), with the attempt's usage and transcript.

    The mapping is the JSON stored as ``ai_agent_tasks.result``. Being a plain ``dict`` of JSON, it is
    also what Dramatiq's ``Pipelines``, ``Callbacks`` and ``Results`` hand on or store, as for any
    actor's return value; ``usage`` and ``transcript`` are read by ``TaskLifecycle`` only.
    """

    __slots__ = ("step", "transcript", "usage")

    def __init__(
        self,
        result: Mapping[str, Any],
        usage: Usage | None = None,
        transcript: list[dict[str, Any]] | None = None,
        step: StepRecord | None = None,
    ) -> None:
        super().__init__(result)
        #: Tokens and cost of the attempt.
        self.usage = usage if usage is not None else Usage()
        #: The run's transcript, when there is one.
        self.transcript = transcript
        #: The run's last step (its final answer), recorded completed with the task's completion.
        self.step = step

    @property
    def result(self) -> dict[str, Any]:
        """The task's result, as stored."""
        return dict(self)

    def __repr__(self) -> str:
        return f"AttemptResult(result={dict(self)!r}, usage={self.usage!r}, transcript={self.transcript!r})"


def stored_usage(usage: messages.Usage, cost_usd: Decimal | None) -> Usage:
    """The orchestrator's token counts and cost as the task store records them."""
    return Usage(
        usage.input_tokens,
        usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_usd=cost_usd,
    )


def as_attempt_result(value: object) -> AttemptResult:
    """An actor's return value as an :class:`AttemptResult`: a dict is the result, else the output."""
    if isinstance(value, AttemptResult):
        return value
    if isinstance(value, dict):
        return AttemptResult(result=value)
    return AttemptResult(result={"output": value})


def usage_of(error: BaseException) -> Usage:
    """The tokens and cost a failed run used: an :class:`AgentRunError` carries them; other errors none."""
    if isinstance(error, AgentRunError):
        return stored_usage(error.usage, error.cost_usd)
    return Usage()


def transcript_of(error: BaseException) -> list[dict[str, Any]] | None:
    """The transcript of a failed run up to its error, when the error is an :class:`AgentRunError`."""
    return list(error.transcript) if isinstance(error, AgentRunError) else None


__all__ = ["AttemptResult", "as_attempt_result", "stored_usage", "transcript_of", "usage_of"]
