"""Model and tool steps as live events: an :class:`~orchestrator.hooks.OrchestratorHooks` subclass.

:class:`EventHooks` publishes, for the task its thread runs (``on_run_start`` names it):

* ``llm_started`` — ``provider``, ``model``, ``messages`` (how many are sent) and, with content on,
  ``prompt``: the messages new since the model last spoke (the task, then tool results);
* ``llm_delta`` — text the model streams (agents with ``stream``): a chunk is published at once when
  none was in the last ``AGENTQ_EVENTS_DELTA_FLUSH_MS``, otherwise gathered with the next ones (up to
  :data:`MAX_DELTA_CHARS` characters; the rest goes out before ``llm_completed``): ``chars`` and, with
  content on, ``text``;
* ``llm_completed`` — ``model``, ``input_tokens``, ``output_tokens`` (cached and reasoning too),
  ``cost_usd`` (a string; null for a model without a known price), ``latency_ms``, ``finish_reason``,
  ``tool_calls`` (names) and, with content on, ``content``; or ``error`` if the call failed;
* ``tool_started`` / ``tool_completed`` — ``name``, ``call_id``, then ``latency_ms`` and ``is_error``;
  with content on, ``arguments`` and ``result``; or ``error`` (a timeout).

Only calls that really happen are published: a step the orchestrator replays from the ledger calls
no hook. One instance serves every worker thread; its state is per thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from config.redaction import describe_error
from middleware.events import EventSink, EventType
from orchestrator.hooks import OrchestratorHooks
from orchestrator.messages import ChatMessage, ModelRequest, ModelResponse, ToolCall
from orchestrator.pricing import PriceTable

if TYPE_CHECKING:
    from orchestrator.agent import AgentResult, AgentSpec, TaskInput
    from orchestrator.tools import ToolOutcome

__all__ = ["MAX_DELTA_CHARS", "EventHooks"]

#: Most characters of streamed text gathered into one ``llm_delta`` event.
MAX_DELTA_CHARS = 1_000


class _RunState:
    """What one thread's current run needs between hook calls."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.llm_started = 0.0
        self.tools_started: dict[str, float] = {}
        self.delta: list[str] = []
        self.delta_chars = 0
        #: When the last ``llm_delta`` was published (monotonic; None: not yet in this run).
        self.delta_published: float | None = None


class EventHooks(OrchestratorHooks):
    """Publishes a run's model and tool steps to ``events`` (see the module docstring).

    Args:
        events: Where events go (the process's publisher).
        prices: For each call's ``cost_usd``.
        delta_flush_ms: How long streamed text is gathered into one ``llm_delta`` (0: every chunk alone).
        clock: Monotonic seconds, for latencies and delta gathering.
    """

    def __init__(
        self,
        events: EventSink,
        prices: PriceTable | None = None,
        *,
        delta_flush_ms: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.prices = prices if prices is not None else PriceTable()
        self.delta_flush_s = delta_flush_ms / 1000
        self.clock = clock
        # A context variable, not a thread-local: runs share the event loop's thread (each is a task with
        # its own context), and a model call's streamed text arrives in a copy of its run's context.
        self._run: ContextVar[_RunState | None] = ContextVar(f"agentq_event_run_{id(self)}", default=None)

    def _state(self) -> _RunState | None:
        return self._run.get()

    def _publish(self, state: _RunState, type: EventType, data: dict[str, Any]) -> None:
        self.events.publish(state.task_id, type, data)

    # --- the run --------------------------------------------------------------------------

    def on_run_start(self, agent: AgentSpec, task: TaskInput) -> None:
        self._run.set(_RunState(task.id))

    def on_run_end(self, result: AgentResult | None, error: BaseException | None) -> None:
        state = self._state()
        if state is not None:
            self._flush_delta(state)
        self._run.set(None)

    # --- model calls ----------------------------------------------------------------------

    def on_llm_start(self, request: ModelRequest, *, provider: str) -> None:
        state = self._state()
        if state is None:
            return
        state.llm_started = self.clock()
        data: dict[str, Any] = {
            "provider": provider,
            "model": request.model,
            "messages": len(request.messages),
            "stream": request.on_delta is not None,
            "prompt": [_message(message) for message in _new_messages(request.messages)],
        }
        self._publish(state, EventType.LLM_STARTED, data)

    def on_llm_delta(self, text: str, *, provider: str) -> None:
        state = self._state()
        if state is None or not text:
            return
        state.delta.append(text)
        state.delta_chars += len(text)
        quiet = state.delta_published is None or self.clock() - state.delta_published >= self.delta_flush_s
        if quiet or state.delta_chars >= MAX_DELTA_CHARS:
            self._flush_delta(state)

    def _flush_delta(self, state: _RunState) -> None:
        if not state.delta:
            return
        text = "".join(state.delta)
        state.delta.clear()
        state.delta_chars = 0
        state.delta_published = self.clock()
        self._publish(state, EventType.LLM_DELTA, {"chars": len(text), "text": text})

    def on_llm_end(
        self,
        request: ModelRequest,
        response: ModelResponse | None,
        error: BaseException | None,
        *,
        provider: str,
    ) -> None:
        state = self._state()
        if state is None:
            return
        self._flush_delta(state)
        data: dict[str, Any] = {
            "provider": provider,
            "model": request.model,
            "latency_ms": _ms(self.clock() - state.llm_started),
        }
        if response is not None:
            cost = self.prices.cost(response.model or request.model, response.usage)
            data.update(
                model=response.model or request.model,
                **response.usage.to_dict(),
                cost_usd=None if cost is None else str(cost),
                finish_reason=response.finish_reason,
                tool_calls=[call.name for call in response.tool_calls],
                content=response.content,
            )
        else:
            data["error"] = describe_error(error) if error is not None else "no answer"
        self._publish(state, EventType.LLM_COMPLETED, data)

    # --- tool calls -----------------------------------------------------------------------

    def on_tool_start(self, call: ToolCall) -> None:
        state = self._state()
        if state is None:
            return
        state.tools_started[call.id] = self.clock()
        arguments = call.raw_arguments if call.raw_arguments is not None else call.arguments
        self._publish(
            state, EventType.TOOL_STARTED, {"name": call.name, "call_id": call.id, "arguments": arguments}
        )

    def on_tool_end(self, call: ToolCall, outcome: ToolOutcome | None, error: BaseException | None) -> None:
        state = self._state()
        if state is None:
            return
        started = state.tools_started.pop(call.id, self.clock())
        data: dict[str, Any] = {
            "name": call.name,
            "call_id": call.id,
            "latency_ms": _ms(self.clock() - started),
        }
        if outcome is not None:
            data.update(is_error=outcome.is_error, result=outcome.content)
        else:
            data.update(is_error=True, error=describe_error(error) if error is not None else "no result")
        self._publish(state, EventType.TOOL_COMPLETED, data)


def _new_messages(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    """The messages after the model's last one: what this call adds to the conversation."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "assistant":
            return messages[index + 1 :]
    return messages


def _message(message: ChatMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_call_id is not None:
        entry["tool_call_id"] = message.tool_call_id
    return entry


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))
