"""The tool registry: named tools with typed, validated arguments.

A tool is a function taking one validated pydantic model and returning a string or a
JSON-serialisable value; an ``async def`` tool is awaited on the run's event loop, a sync one runs in a
thread of its own. The registry derives the JSON schema shown to the model from the
argument model, validates the model's arguments before calling the tool, and turns every
failure (bad arguments, an exception in the tool) into an error result the model can read,
never into an exception that ends the run.

A tool declared ``idempotent=True`` may run twice for one call without harm; a call whose worker
died inside the tool is then run again when the task resumes, while any other tool is not repeated
(see :mod:`orchestrator.ledger`). While it runs, a tool reads :func:`current_tool_call` for the
call's :attr:`ToolContext.idempotency_key`, stable across attempts, to pass to the outside world
(a payment API's idempotency key, a message id), and :attr:`ToolContext.cancelled`, set when the run is
cancelled while the tool runs (``remove_job``): a long tool checks it and stops early; the run does not
wait for it either way.

A tool declared ``requires_approval=True`` never runs before a person approved the call (an agent's
``approval_tools`` add tools to that list): see :mod:`orchestrator.approvals`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from orchestrator.builtin_tools import BUILTIN_TOOLS
from orchestrator.errors import DuplicateTool, UnknownTool
from orchestrator.messages import ToolSpec

__all__ = [
    "Tool",
    "ToolContext",
    "ToolOutcome",
    "ToolRegistry",
    "ToolSpec",
    "current_tool_call",
    "default_registry",
]

#: Longest tool result, in characters, passed back to the model.
MAX_TOOL_OUTPUT_CHARS = 20_000

ArgsT = TypeVar("ArgsT", bound=BaseModel)
FnT = TypeVar("FnT", bound=Callable[..., object])


@dataclass(frozen=True)
class ToolOutcome:
    """The result of executing a tool call.

    Attributes:
        content: The text passed back to the model.
        is_error: Whether the call failed (bad arguments, tool exception, unknown tool).
    """

    content: str
    is_error: bool = False


@dataclass(frozen=True)
class ToolContext:
    """The call a tool is running for, as :func:`current_tool_call` returns it.

    Attributes:
        task_id: The task whose run called the tool.
        seq: The call's step number in the task's current firing.
        idempotency_key: ``<task id>:<firing>:<seq>``: the same for every attempt at this call, so a
            repeated call can be recognised by the outside world; different for every other call.
        cancelled: Set when the run is cancelled while the tool runs; a long tool may check it
            (``cancelled.is_set()``, or wait on it instead of sleeping) and return early. The run does not
            wait for the tool once it is set.
    """

    task_id: str
    seq: int
    idempotency_key: str
    cancelled: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


_current_call: contextvars.ContextVar[ToolContext | None] = contextvars.ContextVar(
    "agentq_tool_call", default=None
)


def current_tool_call() -> ToolContext | None:
    """The call the running tool serves (its idempotency key), or ``None`` outside a tool call."""
    return _current_call.get()


@dataclass(frozen=True)
class Tool:
    """A registered tool.

    Attributes:
        name: The name the model calls it by.
        description: What it does, for the model.
        args_model: The pydantic model its arguments are validated against.
        fn: The function run with the validated arguments.
        idempotent: Running it twice for one call does no harm; a call cut short by a crash is run
            again on resume (any other tool is not: the task fails rather than repeat it).
        requires_approval: Every call waits for a person's approval before it runs.
    """

    name: str
    description: str
    args_model: type[BaseModel]
    fn: Callable[[Any], object]
    idempotent: bool = False
    requires_approval: bool = False

    @property
    def is_async(self) -> bool:
        """Whether ``fn`` is a coroutine function: the run awaits it on its event loop, with no thread."""
        return inspect.iscoroutinefunction(self.fn)

    @property
    def spec(self) -> ToolSpec:
        """The tool as described to a model."""
        return ToolSpec(self.name, self.description, self.args_model.model_json_schema())


def _format_validation_error(name: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return f"invalid arguments for tool {name!r}: " + "; ".join(problems)


def _render(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _bound(text: str) -> str:
    if len(text) <= MAX_TOOL_OUTPUT_CHARS:
        return text
    return text[:MAX_TOOL_OUTPUT_CHARS] + f"... [truncated, {len(text)} chars in total]"


class ToolRegistry:
    """Named tools with typed argument schemas.

    Example:
        >>> registry = ToolRegistry()
        >>> class EchoArgs(BaseModel):
        ...     text: str
        >>> @registry.tool(name="echo", description="Repeat the text.", args=EchoArgs)
        ... def echo(args: EchoArgs) -> str:
        ...     return args.text
        >>> registry.execute("echo", {"text": "hi"})
        ToolOutcome(content='hi', is_error=False)
    """

    def __init__(self) -> None:
        """Create an empty registry."""
        self._tools: dict[str, Tool] = {}

    def register(
        self,
        name: str,
        description: str,
        args_model: type[ArgsT],
        fn: Callable[[ArgsT], object],
        *,
        idempotent: bool = False,
        requires_approval: bool = False,
    ) -> Tool:
        """Register a tool.

        Args:
            name: The name the model calls it by.
            description: What the tool does, for the model.
            args_model: A pydantic model describing and validating the arguments.
            fn: A function taking the validated model; returns a str or a JSON-serialisable
                value. An ``async def`` function is awaited on the run's event loop; a sync one runs
                in a thread of its own.
            idempotent: Whether running it twice for one call does no harm (see :class:`Tool`).
            requires_approval: Whether every call waits for a person's approval before it runs.

        Returns:
            The registered tool.

        Raises:
            DuplicateTool: A tool with this name is already registered.
        """
        if name in self._tools:
            raise DuplicateTool(name)
        tool = Tool(
            name=name,
            description=description,
            args_model=args_model,
            fn=fn,
            idempotent=idempotent,
            requires_approval=requires_approval,
        )
        self._tools[name] = tool
        return tool

    def tool(
        self,
        *,
        name: str,
        description: str,
        args: type[BaseModel],
        idempotent: bool = False,
        requires_approval: bool = False,
    ) -> Callable[[FnT], FnT]:
        """Register the decorated function as a tool; the function is returned unchanged.

        Args:
            name: The name the model calls it by.
            description: What the tool does, for the model.
            args: A pydantic model describing and validating the arguments.
            idempotent: Whether running it twice for one call does no harm (see :class:`Tool`).
            requires_approval: Whether every call waits for a person's approval before it runs.

        Returns:
            A decorator.
        """

        def decorator(fn: FnT) -> FnT:
            self.register(
                name, description, args, fn, idempotent=idempotent, requires_approval=requires_approval
            )
            return fn

        return decorator

    def include(self, other: ToolRegistry) -> None:
        """Register every tool of ``other`` here too.

        Raises:
            DuplicateTool: One of them has the name of a tool already here; nothing is added.
        """
        for tool in other:
            if tool.name in self._tools:
                raise DuplicateTool(tool.name)
        for tool in other:
            self._tools[tool.name] = tool

    def get(self, name: str) -> Tool:
        """Return the tool registered under ``name``.

        Raises:
            UnknownTool: No tool has this name.
        """
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownTool(name) from None

    def names(self) -> tuple[str, ...]:
        """Return the registered tool names, sorted."""
        return tuple(sorted(self._tools))

    def __contains__(self, name: object) -> bool:
        """Return whether a tool is registered under ``name``."""
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        """Iterate over the tools, sorted by name."""
        return iter([self._tools[name] for name in self.names()])

    def __len__(self) -> int:
        """Return the number of registered tools."""
        return len(self._tools)

    def specs(self, allowed: Iterable[str]) -> tuple[ToolSpec, ...]:
        """Return the specs of the allowed tools that exist, sorted by name.

        Args:
            allowed: Tool names an agent may use; names not registered are skipped.
        """
        wanted = set(allowed)
        return tuple(tool.spec for tool in self if tool.name in wanted)

    def execute(self, name: str, arguments: object, *, context: ToolContext | None = None) -> ToolOutcome:
        """Validate the arguments and run a tool; failures come back as error outcomes.

        Args:
            name: The tool to run.
            arguments: The arguments as given by the model.
            context: The call, as :func:`current_tool_call` shows it to the tool while it runs.

        Returns:
            The tool's rendered result, or an error outcome for an unknown tool,
            invalid arguments, an exception raised by the tool, or a result that is
            not JSON-serialisable.
        """
        prepared = self._prepare(name, arguments)
        if isinstance(prepared, ToolOutcome):
            return prepared
        tool, args = prepared
        token = _current_call.set(context)
        try:
            value = tool.fn(args)
            if inspect.iscoroutine(value):  # an async tool called from sync code (no loop in this thread)
                value = asyncio.run(value)
            return ToolOutcome(_bound(_render(value)))
        except Exception as exc:  # a tool failure is reported to the model, not raised
            return ToolOutcome(_bound(f"{type(exc).__name__}: {exc}"), is_error=True)
        finally:
            _current_call.reset(token)

    async def aexecute(
        self, name: str, arguments: object, *, context: ToolContext | None = None
    ) -> ToolOutcome:
        """:meth:`execute` for an async tool, awaited on the running loop (cancelling it cancels the tool)."""
        prepared = self._prepare(name, arguments)
        if isinstance(prepared, ToolOutcome):
            return prepared
        tool, args = prepared
        token = _current_call.set(context)
        try:
            value = tool.fn(args)
            if inspect.isawaitable(value):
                value = await value
            return ToolOutcome(_bound(_render(value)))
        except Exception as exc:  # a tool failure is reported to the model, not raised
            return ToolOutcome(_bound(f"{type(exc).__name__}: {exc}"), is_error=True)
        finally:
            _current_call.reset(token)

    def _prepare(self, name: str, arguments: object) -> tuple[Tool, BaseModel] | ToolOutcome:
        """The tool and its validated arguments, or the error outcome the model reads instead."""
        tool = self._tools.get(name)
        if tool is None:
            return ToolOutcome(str(UnknownTool(name)), is_error=True)
        if not isinstance(arguments, dict):
            return ToolOutcome(
                f"invalid arguments for tool {name!r}: expected a JSON object, "
                f"got {type(arguments).__name__}",
                is_error=True,
            )
        try:
            return tool, tool.args_model.model_validate(arguments)
        except ValidationError as exc:
            return ToolOutcome(_format_validation_error(name, exc), is_error=True)


def default_registry() -> ToolRegistry:
    """Return a new registry holding the built-in tools (``calculate``, ``get_current_time``), which
    are idempotent: they read the clock or compute, and change nothing."""
    registry = ToolRegistry()
    for name, description, args_model, fn in BUILTIN_TOOLS:
        registry.register(name, description, args_model, fn, idempotent=True)
    return registry
