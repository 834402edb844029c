"""Tools whose side effect tests can count, in a worker process too: ``AGENTQ_TOOLS=tests.fakes.tools:tools``.

``append_line`` appends ``<text> <idempotency key>`` to the file at ``path`` (then sleeps ``sleep_ms``, so a
test can kill a worker after the tool did its work and before its step is recorded completed). It is not
idempotent; ``append_line_idempotent`` is the same tool declared idempotent.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, Field

from orchestrator.tools import ToolRegistry, current_tool_call

__all__ = ["AppendArgs", "lines", "tools"]

tools = ToolRegistry()


class AppendArgs(BaseModel):
    """Where to append what, and how long to sleep afterwards."""

    path: str
    text: str
    sleep_ms: int = Field(default=0, ge=0, le=60_000)


def _append(args: AppendArgs) -> str:
    call = current_tool_call()
    key = call.idempotency_key if call is not None else "-"
    with Path(args.path).open("a", encoding="utf-8") as file:
        file.write(f"{args.text} {key}\n")
    time.sleep(args.sleep_ms / 1000)
    return f"appended {args.text!r}"


tools.register("append_line", "Append a line of text to a file.", AppendArgs, _append)
tools.register(
    "append_line_idempotent",
    "Append a line of text to a file (harmless to repeat).",
    AppendArgs,
    _append,
    idempotent=True,
)


def lines(path: Path) -> list[str]:
    """The lines the tools appended to ``path`` (none when it does not exist)."""
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
