"""OpenTelemetry spans for agent runs, following the GenAI semantic conventions (semconv 0.66).

:class:`TracingHooks` opens, in the thread running the task:

* ``invoke_agent <agent name>`` (INTERNAL) per run — ``gen_ai.operation.name=invoke_agent``,
  ``gen_ai.agent.name``/``gen_ai.agent.id``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
  summed usage at the end;
* ``chat <model>`` (CLIENT) per model call, a child of the run — ``gen_ai.operation.name=chat``,
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.request.temperature``/``max_tokens``,
  ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``/``output_tokens``,
  ``gen_ai.response.finish_reasons``;
* ``execute_tool <tool>`` (INTERNAL) per tool call — ``gen_ai.tool.name``, ``gen_ai.tool.call.id``.

Each span is current while it is open, so whatever the provider SDK or a tool logs or
traces nests under it. Prompts, model output, tool arguments and results are recorded
(``gen_ai.system_instructions``, ``gen_ai.input.messages``, ``gen_ai.output.messages``,
``gen_ai.tool.call.arguments``/``result``) only with ``record_content=True``
(``AGENTQ_TRACE_CONTENT``). Errors set the span status and record the exception.
Uses the OpenTelemetry API only; the orchestrator stays queue-agnostic.
"""

from __future__ import annotations

import contextvars
import json
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from config.redaction import describe_error, exception_attributes
from orchestrator.hooks import OrchestratorHooks
from orchestrator.messages import ModelRequest, ModelResponse, ToolCall

if TYPE_CHECKING:
    from orchestrator.agent import AgentResult, AgentSpec, TaskInput
    from orchestrator.tools import ToolOutcome

__all__ = ["TRACER_NAME", "TracingHooks"]

#: Instrumentation scope name of these spans.
TRACER_NAME = "agentq.orchestrator"


class TracingHooks(OrchestratorHooks):
    """GenAI spans per run, model call and tool call. Thread-safe: one instance serves every worker thread.

    Args:
        record_content: Also record prompts, outputs and tool arguments/results (off by default).
        tracer_provider: Where spans go; None means the global provider.
    """

    def __init__(
        self, *, record_content: bool = False, tracer_provider: trace.TracerProvider | None = None
    ) -> None:
        self.record_content = record_content
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME)
        #: The open spans of the run in this context (each run on the event loop is a task with its own).
        self._spans: contextvars.ContextVar[tuple[tuple[Span, object], ...]] = contextvars.ContextVar(
            f"agentq_open_spans_{id(self)}", default=()
        )

    # --- span stack per run -------------------------------------------------

    def _open(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Span:
        span = self.tracer.start_span(name, kind=kind, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        self._spans.set((*self._spans.get(), (span, token)))
        return span

    def _close(self, error: BaseException | None) -> Span | None:
        stack = self._spans.get()
        if not stack:
            return None
        span, token = stack[-1]
        self._spans.set(stack[:-1])
        if error is not None:
            span.add_event("exception", exception_attributes(error))  # not record_exception: redacted
            span.set_status(Status(StatusCode.ERROR, describe_error(error)))
            span.set_attribute("error.type", type(error).__qualname__)
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]
        return span

    @staticmethod
    def _current() -> Span:
        return trace.get_current_span()

    # --- hooks --------------------------------------------------------------

    def on_run_start(self, agent: AgentSpec, task: TaskInput) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent.name,
            "gen_ai.agent.id": agent.id,
            "gen_ai.provider.name": agent.provider,
            "gen_ai.request.model": agent.model,
            "agentq.task_id": task.id,
        }
        if self.record_content and agent.system_prompt:
            attributes["gen_ai.system_instructions"] = agent.system_prompt
        self._open(f"invoke_agent {agent.name}", SpanKind.INTERNAL, attributes)

    def on_run_end(self, result: AgentResult | None, error: BaseException | None) -> None:
        span = self._current()
        if result is not None and span.is_recording():
            span.set_attribute("gen_ai.response.model", result.model)
            span.set_attribute("gen_ai.usage.input_tokens", result.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", result.usage.output_tokens)
            span.set_attribute("agentq.turns", result.turns)
            if result.cost_usd is not None:
                span.set_attribute("agentq.cost_usd", float(result.cost_usd))
        self._close(error)

    def on_llm_start(self, request: ModelRequest, *, provider: str) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": request.model,
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        if self.record_content:
            attributes["gen_ai.input.messages"] = _messages_json(request)
        self._open(f"chat {request.model}", SpanKind.CLIENT, attributes)

    def on_llm_end(
        self,
        request: ModelRequest,
        response: ModelResponse | None,
        error: BaseException | None,
        *,
        provider: str,
    ) -> None:
        span = self._current()
        if response is not None and span.is_recording():
            span.set_attribute("gen_ai.response.model", response.model)
            span.set_attribute("gen_ai.usage.input_tokens", response.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", response.usage.output_tokens)
            span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
            if self.record_content:
                span.set_attribute("gen_ai.output.messages", _output_json(response))
        self._close(error)

    def on_tool_start(self, call: ToolCall) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.id,
            "gen_ai.tool.type": "function",
        }
        if self.record_content:
            arguments = call.raw_arguments if call.raw_arguments is not None else json.dumps(call.arguments)
            attributes["gen_ai.tool.call.arguments"] = arguments
        self._open(f"execute_tool {call.name}", SpanKind.INTERNAL, attributes)

    def on_tool_end(self, call: ToolCall, outcome: ToolOutcome | None, error: BaseException | None) -> None:
        span = self._current()
        if outcome is not None and span.is_recording():
            if outcome.is_error:
                span.set_status(Status(StatusCode.ERROR, "tool returned an error"))
                span.set_attribute("error.type", "tool_error")
            if self.record_content:
                span.set_attribute("gen_ai.tool.call.result", outcome.content)
        self._close(error)


def _calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [{"id": call.id, "name": call.name, "arguments": call.arguments} for call in calls]


def _messages_json(request: ModelRequest) -> str:
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_call_id:
            entry["tool_call_id"] = message.tool_call_id
        if message.tool_calls:
            entry["tool_calls"] = _calls(message.tool_calls)
        messages.append(entry)
    return json.dumps(messages, ensure_ascii=False, default=str)


def _output_json(response: ModelResponse) -> str:
    output = [{"role": "assistant", "content": response.content, "tool_calls": _calls(response.tool_calls)}]
    return json.dumps(output, ensure_ascii=False, default=str)
