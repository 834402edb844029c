"""The built-in tools: safe arithmetic and the current time."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from orchestrator import default_registry
from orchestrator.builtin_tools import MAX_EXPRESSION_CHARS, evaluate_expression


def calculate(expression: str) -> tuple[str, bool]:
    outcome = default_registry().execute("calculate", {"expression": expression})
    return outcome.content, outcome.is_error


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2", "3"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("2 ** 3 ** 2", "512"),
        ("-2 ** 2", "-4"),
        ("7 / 2", "3.5"),
        ("8 / 2", "4"),
        ("7 // 2", "3"),
        ("7 % 3", "1"),
        ("+5 - -5", "10"),
        ("0.1 + 0.2", "0.30000000000000004"),
        ("2 ** -1", "0.5"),
    ],
)
def test_calculate_evaluates_arithmetic_with_python_precedence(expression: str, expected: str) -> None:
    assert calculate(expression) == (expected, False)


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("x + 1", "'x'"),
        ("abs(-1)", "'abs'"),
        ("__import__('os')", "'__import__'"),
        ("__import__('os').system('true')", "__import__"),
        ("(1).real", "'real'"),
        ("'a' * 3", "'a'"),
        ("True + 1", "True"),
        ("1 if 1 else 2", "IfExp"),
        ("[1, 2]", "List"),
        ("1 << 2", "LShift"),
        ("1 < 2", "Compare"),
    ],
)
def test_calculate_rejects_anything_but_arithmetic_naming_it(expression: str, named: str) -> None:
    content, is_error = calculate(expression)

    assert is_error
    assert named in content


def test_calculate_rejects_a_huge_exponent_quickly() -> None:
    started = time.monotonic()

    content, is_error = calculate("9**9**9")

    assert is_error
    assert "exponent" in content
    assert time.monotonic() - started < 1


def test_calculate_rejects_results_that_grow_too_large() -> None:
    content, is_error = calculate("(10**100) * (10**100) * (10**100) * (10**100)")

    assert is_error
    assert "too large" in content


def test_calculate_reports_division_by_zero_as_a_tool_error() -> None:
    assert calculate("1 / 0") == ("ZeroDivisionError: division by zero", True)
    assert calculate("5 % 0")[1] is True


def test_calculate_rejects_a_too_long_expression_naming_the_argument() -> None:
    content, is_error = calculate("1+" * MAX_EXPRESSION_CHARS + "1")

    assert is_error
    assert "expression" in content


def test_evaluate_expression_rejects_invalid_syntax() -> None:
    with pytest.raises(ValueError, match="invalid expression"):
        evaluate_expression("1 +")


def test_get_current_time_returns_iso_time_in_the_zone() -> None:
    outcome = default_registry().execute("get_current_time", {"timezone": "Asia/Tokyo"})

    assert not outcome.is_error
    parsed = datetime.fromisoformat(outcome.content)
    assert parsed.utcoffset() is not None
    assert parsed.utcoffset().total_seconds() == 9 * 3600  # type: ignore[union-attr]


def test_get_current_time_with_an_unknown_zone_is_a_tool_error_naming_it() -> None:
    outcome = default_registry().execute("get_current_time", {"timezone": "Mars/Olympus_Mons"})

    assert outcome.is_error
    assert "Mars/Olympus_Mons" in outcome.content
