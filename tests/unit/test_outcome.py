"""An attempt's outcome as plain values: what an agent kind returns, what a failed run carries."""

from __future__ import annotations

import json
from decimal import Decimal

from middleware.outcome import AttemptResult, as_attempt_result, transcript_of, usage_of
from orchestrator import messages
from orchestrator.errors import MaxTurnsExceeded
from taskstore import Usage


def test_a_failed_runs_usage_and_transcript_are_read_from_its_typed_error() -> None:
    error = MaxTurnsExceeded(2)
    error.record_run(
        messages.Usage(input_tokens=10, output_tokens=4, cached_input_tokens=3, reasoning_tokens=1),
        [{"role": "user", "content": "hi"}],
        Decimal("0.25"),
    )

    assert usage_of(error) == Usage(
        10, 4, cached_input_tokens=3, reasoning_tokens=1, cost_usd=Decimal("0.25")
    )
    assert transcript_of(error) == [{"role": "user", "content": "hi"}]


class LooksLikeARunError(Exception):
    """Not ours: attributes that merely look like a run error's are not read."""

    usage = messages.Usage(input_tokens=99)
    transcript = [{"role": "user", "content": "x"}]
    cost_usd = Decimal(1)


def test_other_errors_carry_no_usage_and_no_transcript() -> None:
    assert usage_of(LooksLikeARunError()) == Usage()
    assert transcript_of(LooksLikeARunError()) is None


def test_a_run_error_that_never_ran_carries_empty_usage() -> None:
    assert usage_of(MaxTurnsExceeded(1)) == Usage()
    assert transcript_of(MaxTurnsExceeded(1)) == []


def test_an_attempt_result_is_its_json_result_with_usage_alongside() -> None:
    result = AttemptResult(result={"output": "ok"}, usage=Usage(1, 2), transcript=[])

    assert json.loads(json.dumps(result)) == {"output": "ok"} == result.result
    assert (result.usage, result.transcript) == (Usage(1, 2), [])


def test_other_return_values_become_results() -> None:
    assert as_attempt_result({"a": 1}).result == {"a": 1}
    assert as_attempt_result("text").result == {"output": "text"}
    assert as_attempt_result(None).result == {"output": None}
    kept = AttemptResult(result={"b": 2})
    assert as_attempt_result(kept) is kept
