"""Tools for the approval and cancel tests, in a worker process too (``AGENTQ_TOOLS=`` module``:tools``).

``refund`` is declared ``requires_approval=True``; it appends ``refund <amount> <idempotency key>`` to the
file at ``path``, so a test counts its executions across processes. ``slow_export`` appends ``started``,
then waits up to ``seconds`` for the run's cancellation signal and appends ``stopped`` (told) or
``finished``.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pydantic import BaseModel, Field

from orchestrator.tools import ToolRegistry, current_tool_call

__all__ = ["RefundArgs", "SlowArgs", "tools"]

tools = ToolRegistry()


class RefundArgs(BaseModel):
    """Where to record the refund, and how much."""

    path: str
    amount: int = Field(ge=0)


class SlowArgs(BaseModel):
    """Where to record progress, and how long the export takes."""

    path: str
    seconds: float = Field(ge=0, le=60)


def _append(path: str, line: str) -> None:
    with Path(path).open("a", encoding="utf-8") as file:
        file.write(line + "\n")


@tools.tool(
    name="refund",
    description="Refund an order to the customer (each refund is approved by a person first).",
    args=RefundArgs,
    requires_approval=True,
)
def refund(args: RefundArgs) -> str:
    call = current_tool_call()
    _append(args.path, f"refund {args.amount} {call.idempotency_key if call else '-'}")
    return f"refunded {args.amount}"


@tools.tool(name="slow_export", description="Export the orders (slow).", args=SlowArgs)
def slow_export(args: SlowArgs) -> str:
    call = current_tool_call()
    cancelled = call.cancelled if call is not None else threading.Event()
    _append(args.path, "started")
    if cancelled.wait(args.seconds):
        _append(args.path, "stopped")
        return "stopped early"
    _append(args.path, "finished")
    return "exported"
