"""The tool registry: registration, schemas, validation and failures."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from orchestrator import DuplicateTool, ToolRegistry, UnknownTool, default_registry


class AddArgs(BaseModel):
    a: int
    b: int = 0


def make_registry() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(name="add", description="Add two integers.", args=AddArgs)
    def add(args: AddArgs) -> dict[str, int]:
        return {"sum": args.a + args.b}

    return registry


def test_decorated_tool_runs_with_validated_arguments_and_returns_json() -> None:
    outcome = make_registry().execute("add", {"a": 2, "b": "3"})

    assert outcome.is_error is False
    assert outcome.content == '{"sum": 5}'


def test_spec_carries_the_json_schema_of_the_argument_model() -> None:
    (spec,) = make_registry().specs(["add"])

    assert spec.name == "add"
    assert spec.description == "Add two integers."
    assert spec.parameters["required"] == ["a"]
    assert set(spec.parameters["properties"]) == {"a", "b"}


def test_specs_keep_only_allowed_existing_tools_in_name_order() -> None:
    registry = default_registry()

    specs = registry.specs(["get_current_time", "missing", "calculate"])

    assert [spec.name for spec in specs] == ["calculate", "get_current_time"]


def test_invalid_arguments_come_back_as_an_error_naming_the_argument() -> None:
    outcome = make_registry().execute("add", {"a": "not a number"})

    assert outcome.is_error
    assert "'add'" in outcome.content
    assert "a:" in outcome.content


def test_non_object_arguments_come_back_as_an_error() -> None:
    outcome = make_registry().execute("add", ["a"])

    assert outcome.is_error
    assert "expected a JSON object" in outcome.content


def test_exception_in_a_tool_comes_back_as_type_and_message() -> None:
    registry = ToolRegistry()

    def explode(args: AddArgs) -> str:
        raise RuntimeError(f"boom {args.a}")

    registry.register("explode", "Always fails.", AddArgs, explode)

    outcome = registry.execute("explode", {"a": 1})

    assert outcome.is_error
    assert outcome.content == "RuntimeError: boom 1"


def test_registering_a_name_twice_raises_naming_it() -> None:
    registry = make_registry()

    with pytest.raises(DuplicateTool, match="'add'"):
        registry.register("add", "Again.", AddArgs, lambda args: args.a)
    assert issubclass(DuplicateTool, ValueError)


def test_get_of_an_unknown_name_raises_unknown_tool() -> None:
    with pytest.raises(UnknownTool, match="'nope'"):
        make_registry().get("nope")


def test_execute_of_an_unknown_name_is_an_error_outcome() -> None:
    outcome = make_registry().execute("nope", {})

    assert outcome.is_error
    assert "'nope'" in outcome.content


def test_default_registry_is_new_each_time_and_holds_the_builtins() -> None:
    first, second = default_registry(), default_registry()

    assert first is not second
    assert first.names() == ("calculate", "get_current_time")
    first.register("extra", "Extra.", AddArgs, lambda args: args.a)
    assert "extra" not in second
