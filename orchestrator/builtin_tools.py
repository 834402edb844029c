"""The two harmless built-in tools: ``get_current_time`` and ``calculate``.

``calculate`` never calls ``eval``: it parses the expression with :mod:`ast` and walks
only numeric constants and arithmetic operators, with bounds on the expression length,
the exponent and the size of every intermediate result, so no input can hang a worker.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

__all__ = [
    "BUILTIN_TOOLS",
    "CalculateArgs",
    "GetCurrentTimeArgs",
    "calculate",
    "evaluate_expression",
    "get_current_time",
]

#: Longest expression ``calculate`` accepts, in characters.
MAX_EXPRESSION_CHARS = 200
#: Largest absolute exponent accepted by ``**``.
MAX_EXPONENT = 100
#: Largest absolute value of any intermediate or final result.
MAX_MAGNITUDE = 10**300

Number = int | float

_BINARY_OPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


class GetCurrentTimeArgs(BaseModel):
    """Arguments of ``get_current_time``."""

    timezone: str = Field(description="IANA time zone name, e.g. 'Europe/Paris' or 'UTC'.")


class CalculateArgs(BaseModel):
    """Arguments of ``calculate``."""

    expression: str = Field(
        description="Arithmetic expression using numbers, + - * / // % ** and parentheses.",
        max_length=MAX_EXPRESSION_CHARS,
    )


def get_current_time(args: GetCurrentTimeArgs) -> str:
    """Return the current time in an IANA time zone, as ISO-8601.

    Raises:
        ValueError: The time zone is unknown.
    """
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {args.timezone!r}; use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None
    return datetime.now(zone).isoformat()


def _checked(value: Number) -> Number:
    if isinstance(value, complex):
        raise ValueError("result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("result is too large")
    if abs(value) > MAX_MAGNITUDE:
        raise ValueError(f"result is too large (limit is 1e{len(str(MAX_MAGNITUDE)) - 1})")
    return value


def _binary(node: ast.BinOp) -> Number:
    op = _BINARY_OPS.get(type(node.op))
    if op is None:
        raise ValueError(f"operator {type(node.op).__name__} is not allowed")
    left, right = _walk(node.left), _walk(node.right)
    if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
        raise ValueError(f"exponent {right} is too large (limit is {MAX_EXPONENT})")
    try:
        result: Number = op(left, right)
    except OverflowError:
        raise ValueError("result is too large") from None
    return _checked(result)


def _walk(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _walk(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"constant {node.value!r} is not allowed; only numbers are")
        return _checked(node.value)
    if isinstance(node, ast.BinOp):
        return _binary(node)
    if isinstance(node, ast.UnaryOp):
        unary = _UNARY_OPS.get(type(node.op))
        if unary is None:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed")
        return _checked(unary(_walk(node.operand)))
    detail = ""
    if isinstance(node, ast.Name):
        detail = f" {node.id!r}"
    elif isinstance(node, ast.Attribute):
        detail = f" {node.attr!r}"
    elif isinstance(node, ast.Call):
        detail = f" to {ast.unparse(node.func)!r}"
    raise ValueError(f"{type(node).__name__}{detail} is not allowed; only arithmetic on numbers is")


def evaluate_expression(expression: str) -> Number:
    """Evaluate an arithmetic expression safely.

    Args:
        expression: Numbers, ``+ - * / // % **``, unary ``+``/``-`` and parentheses.

    Returns:
        The value of the expression.

    Raises:
        ValueError: The expression is too long, is not valid syntax, uses anything
            other than arithmetic on numbers, or its result is out of bounds.
        ZeroDivisionError: The expression divides by zero.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression is {len(expression)} characters long (limit is {MAX_EXPRESSION_CHARS})")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"invalid expression {expression!r}: {exc.msg}") from None
    return _walk(tree)


def calculate(args: CalculateArgs) -> str:
    """Evaluate an arithmetic expression; integral results are rendered as integers."""
    value = evaluate_expression(args.expression)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


#: The built-in tools as (name, description, argument model, function).
BUILTIN_TOOLS: tuple[tuple[str, str, type[BaseModel], Callable[[Any], object]], ...] = (
    (
        "calculate",
        "Evaluate an arithmetic expression (numbers, + - * / // % ** and parentheses) and return the result.",
        CalculateArgs,
        calculate,
    ),
    (
        "get_current_time",
        "Return the current date and time, in ISO-8601, in the given IANA time zone.",
        GetCurrentTimeArgs,
        get_current_time,
    ),
)
