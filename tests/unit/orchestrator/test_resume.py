"""The agent loop with a step ledger: every call recorded, and a run resumed after the completed steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator import (
    AgentSpec,
    MaxTurnsExceeded,
    ModelRequest,
    ModelResponse,
    Orchestrator,
    OrchestratorHooks,
    ProviderRegistry,
    ProviderUnavailable,
    TaskInput,
    ToolCall,
    Usage,
    default_registry,
)
from orchestrator.ledger import (
    MAX_STEP_TEXT_CHARS,
    LedgerMismatch,
    RecordedStep,
    StepNotRecorded,
    UnfinishedToolNotRepeated,
    clip_payload,
    model_output,
)
from orchestrator.tools import ToolOutcome, current_tool_call


@dataclass
class Row:
    """A recorded step, as a store returns it."""

    seq: int
    kind: str
    name: str
    status: str
    input: dict[str, Any] | None
    output: dict[str, Any] | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal | None = None


@dataclass
class ListLedger:
    """A ledger in a list, with the store's rule that a completed step is never rewritten."""

    rows: list[Row] = field(default_factory=list)
    scope: str = "task-1:0"
    writes: list[tuple[str, int]] = field(default_factory=list)
    replayed: list[Sequence[RecordedStep]] = field(default_factory=list)
    refuse_from: int | None = None
    #: The step recorded as the run's last (its final answer).
    last: int | None = None

    def steps(self) -> Sequence[Row]:
        return [dataclasses.replace(row) for row in self.rows]

    def _row(self, seq: int) -> Row | None:
        return next((row for row in self.rows if row.seq == seq), None)

    def start(self, seq: int, kind: str, name: str, input: Mapping[str, Any]) -> None:
        self.writes.append(("start", seq))
        if self.refuse_from is not None and seq >= self.refuse_from:
            raise StepNotRecorded(f"step {seq} refused", retryable=False)
        row = self._row(seq)
        assert row is None or row.status != "completed", f"step {seq} is completed: never started again"
        if row is None:
            self.rows.append(Row(seq, kind, name, "started", dict(input)))
        else:
            row.kind, row.name, row.status, row.input, row.output, row.error = (
                kind,
                name,
                "started",
                dict(input),
                None,
                None,
            )

    def complete(
        self,
        seq: int,
        output: Mapping[str, Any],
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | None = None,
        last: bool = False,
    ) -> None:
        self.writes.append(("complete", seq))
        self.last = seq if last else self.last
        row = self._row(seq)
        assert row is not None and row.status == "started"
        row.status, row.output = "completed", dict(output)
        row.input_tokens, row.output_tokens, row.cost_usd = input_tokens, output_tokens, cost_usd

    def fail(self, seq: int, error: str) -> None:
        self.writes.append(("fail", seq))
        row = self._row(seq)
        assert row is not None and row.status == "started"
        row.status, row.error = "failed", error

    def resumed(self, replayed: Sequence[RecordedStep]) -> None:
        self.replayed.append(replayed)


class QueueProvider:
    """Answers with queued responses (or raises queued errors) and records every request."""

    name = "queue"

    def __init__(self, *answers: ModelResponse | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[ModelRequest] = []

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        assert self.answers, "unexpected model call"
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def tool_calls(*calls: tuple[str, str, dict[str, Any]], model: str = "m-1") -> ModelResponse:
    return ModelResponse(
        content=None,
        tool_calls=tuple(ToolCall(call_id, name, args) for call_id, name, args in calls),
        usage=Usage(input_tokens=10, output_tokens=2),
        model=model,
        finish_reason="tool_calls",
    )


def answer(text: str, model: str = "m-1") -> ModelResponse:
    return ModelResponse(text, (), Usage(input_tokens=20, output_tokens=4), model, "stop")


class InvoiceArgs(BaseModel):
    amount: int


@dataclass
class World:
    """What tools did: calls of the side-effecting tools, and the idempotency keys they saw."""

    invoices: list[int] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)


def orchestrator(
    provider: QueueProvider, world: World, *, repeat: bool = False, hooks: OrchestratorHooks | None = None
) -> Orchestrator:
    tools = default_registry()

    @tools.tool(name="send_invoice", description="Sends an invoice.", args=InvoiceArgs)
    def send_invoice(args: InvoiceArgs) -> str:
        context = current_tool_call()
        world.invoices.append(args.amount)
        world.keys.append(context.idempotency_key if context else None)
        return f"invoice for {args.amount} sent"

    @tools.tool(name="quote", description="Prices an invoice.", args=InvoiceArgs, idempotent=True)
    def quote(args: InvoiceArgs) -> str:
        world.invoices.append(-args.amount)
        return f"quote {args.amount}"

    return Orchestrator(
        ProviderRegistry({"queue": lambda: provider, "backup": lambda: provider}),
        tools,
        hooks=hooks,
        repeat_unfinished_tools=repeat,
    )


def agent(**fields: Any) -> AgentSpec:
    values: dict[str, Any] = {
        "id": "agent-1",
        "name": "biller",
        "provider": "queue",
        "model": "m-1",
        "allowed_tools": ("send_invoice", "quote", "calculate"),
    }
    values.update(fields)
    return AgentSpec(**values)


TASK = TaskInput(id="task-1", title="Bill the customer")


def llm_row(
    seq: int,
    response: ModelResponse,
    *,
    turn: int = 1,
    provider: str = "queue",
    model: str = "m-1",
    status: str = "completed",
) -> Row:
    output = model_output(provider, response, Decimal("0.01")) if status == "completed" else None
    return Row(seq, "llm", model, status, {"turn": turn, "provider": provider, "model": model}, output)


def tool_row(
    seq: int,
    call_id: str,
    name: str,
    *,
    status: str = "completed",
    content: str = "done",
    is_error: bool = False,
) -> Row:
    output = {"content": content, "is_error": is_error} if status == "completed" else None
    return Row(seq, "tool", name, status, {"turn": 1, "call_id": call_id, "arguments": {}}, output)


# --- recording ------------------------------------------------------------------------------------------


def test_every_model_call_and_tool_call_is_recorded_started_then_completed() -> None:
    provider = QueueProvider(
        tool_calls(("c1", "send_invoice", {"amount": 5}), ("c2", "quote", {"amount": 6})), answer("billed")
    )
    world, ledger = World(), ListLedger()

    result = orchestrator(provider, world).run(agent(), TASK, ledger=ledger)

    assert result.output == "billed" and result.turns == 2
    assert ledger.writes == [
        ("start", 0),
        ("complete", 0),
        ("start", 1),
        ("complete", 1),
        ("start", 2),
        ("complete", 2),
        ("start", 3),
        ("complete", 3),
    ]
    assert [(row.seq, row.kind, row.name, row.status) for row in ledger.rows] == [
        (0, "llm", "m-1", "completed"),
        (1, "tool", "send_invoice", "completed"),
        (2, "tool", "quote", "completed"),
        (3, "llm", "m-1", "completed"),
    ]
    first = ledger.rows[0]
    assert first.input == {"turn": 1, "provider": "queue", "model": "m-1"}
    assert (first.input_tokens, first.output_tokens) == (10, 2)
    assert first.output is not None and first.output["tool_calls"][0]["id"] == "c1"
    assert ledger.rows[1].output == {"content": "invoice for 5 sent", "is_error": False}
    assert ledger.rows[1].input == {
        "turn": 1,
        "call_id": "c1",
        "arguments": {"amount": 5},
        "idempotency_key": "task-1:0:1",
    }
    assert world.keys == ["task-1:0:1"] and ledger.replayed == [] and ledger.last == 3


def test_a_failed_call_is_recorded_failed_and_the_fallback_takes_the_same_step() -> None:
    provider = QueueProvider(
        ProviderUnavailable("503 upstream", status_code=503), answer("from backup", "m-2")
    )
    ledger = ListLedger()

    result = orchestrator(provider, World()).run(agent(fallback_model="m-2"), TASK, ledger=ledger)

    assert result.output == "from backup"
    assert ledger.writes == [("start", 0), ("fail", 0), ("start", 0), ("complete", 0)]
    [row] = ledger.rows
    assert (row.name, row.status, row.input) == (
        "m-2",
        "completed",
        {"turn": 1, "provider": "queue", "model": "m-2"},
    )


def test_a_tool_that_raises_is_a_completed_step_whose_result_is_an_error() -> None:
    provider = QueueProvider(tool_calls(("c1", "calculate", {"expression": "1/0"})), answer("oops"))
    ledger = ListLedger()

    orchestrator(provider, World()).run(agent(), TASK, ledger=ledger)

    assert ledger.rows[1].status == "completed"
    assert ledger.rows[1].output == {"content": "ZeroDivisionError: division by zero", "is_error": True}


def test_a_refused_write_stops_the_run_before_the_call() -> None:
    provider = QueueProvider(tool_calls(("c1", "send_invoice", {"amount": 5})), answer("billed"))
    world, ledger = World(), ListLedger(refuse_from=1)

    with pytest.raises(StepNotRecorded, match="step 1 refused") as caught:
        orchestrator(provider, world).run(agent(), TASK, ledger=ledger)

    assert world.invoices == [] and len(provider.requests) == 1
    assert caught.value.usage == Usage(input_tokens=10, output_tokens=2)  # the call it made is accounted


# --- resuming -------------------------------------------------------------------------------------------


def test_a_resumed_run_neither_requests_completed_calls_nor_runs_completed_tools_again() -> None:
    first = tool_calls(("call_A", "send_invoice", {"amount": 5}))
    ledger = ListLedger(
        [llm_row(0, first), tool_row(1, "call_A", "send_invoice", content="invoice for 5 sent")]
    )
    provider = QueueProvider(answer("billed"))
    world = World()

    result = orchestrator(provider, world).run(agent(), TASK, ledger=ledger)

    assert world.invoices == [] and len(provider.requests) == 1
    assert result.output == "billed" and result.turns == 2
    messages = provider.requests[0].messages
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[1].tool_calls == first.tool_calls and messages[2].tool_call_id == "call_A"
    assert messages[2].content == "invoice for 5 sent"
    assert ledger.writes == [("start", 2), ("complete", 2)]
    assert [row.seq for row in ledger.replayed[0]] == [0, 1]
    assert [entry.get("replayed", False) for entry in result.transcript] == [True, True, False]
    assert result.usage == Usage(input_tokens=20, output_tokens=4)  # this run's call only


def test_the_ledgers_tool_call_ids_are_used_whatever_a_provider_answers_now() -> None:
    # The provider would give new ids if asked again; it is not asked: both messages carry the ledger's id.
    first = tool_calls(("toolu_ledger", "quote", {"amount": 1}))
    ledger = ListLedger([llm_row(0, first), tool_row(1, "toolu_ledger", "quote", content="quote 1")])
    provider = QueueProvider(tool_calls(("toolu_new", "quote", {"amount": 2})), answer("ok"))

    orchestrator(provider, World()).run(agent(), TASK, ledger=ledger)

    resumed_request = provider.requests[0].messages
    assert resumed_request[1].tool_calls[0].id == resumed_request[2].tool_call_id == "toolu_ledger"
    final_request = provider.requests[1].messages
    assert [m.tool_call_id for m in final_request if m.role == "tool"] == ["toolu_ledger", "toolu_new"]


def test_a_recorded_final_answer_ends_the_run_without_any_model_call() -> None:
    ledger = ListLedger([llm_row(0, answer("all done"))])
    provider = QueueProvider()

    result = orchestrator(provider, World()).run(agent(), TASK, ledger=ledger)

    assert (result.output, result.turns, result.usage) == ("all done", 1, Usage())
    assert provider.requests == [] and ledger.writes == []


def test_a_model_call_left_started_or_failed_is_requested_again() -> None:
    for status in ("started", "failed"):
        ledger = ListLedger([llm_row(0, answer("x"), status=status)])
        provider = QueueProvider(answer("fresh"))

        result = orchestrator(provider, World()).run(agent(), TASK, ledger=ledger)

        assert result.output == "fresh" and len(provider.requests) == 1
        assert ledger.writes == [("start", 0), ("complete", 0)] and ledger.replayed == []


def test_tool_calls_the_model_asked_for_but_never_started_run_on_resume() -> None:
    ledger = ListLedger(
        [llm_row(0, tool_calls(("c1", "send_invoice", {"amount": 5}), ("c2", "quote", {"amount": 6})))]
    )
    provider = QueueProvider(answer("billed"))
    world = World()

    orchestrator(provider, world).run(agent(), TASK, ledger=ledger)

    assert world.invoices == [5, -6] and world.keys == ["task-1:0:1"]
    assert [m.role for m in provider.requests[0].messages] == ["user", "assistant", "tool", "tool"]


def test_a_non_idempotent_tool_left_started_is_not_repeated() -> None:
    ledger = ListLedger(
        [
            llm_row(0, tool_calls(("c1", "send_invoice", {"amount": 5}))),
            tool_row(1, "c1", "send_invoice", status="started"),
        ]
    )
    provider, world = QueueProvider(answer("never")), World()

    with pytest.raises(UnfinishedToolNotRepeated) as caught:
        orchestrator(provider, world).run(agent(), TASK, ledger=ledger)

    assert "tool 'send_invoice' may already have run; not repeated" in str(caught.value)
    assert caught.value.retryable is False
    assert world.invoices == [] and provider.requests == [] and ledger.writes == []


def test_an_unfinished_tool_is_repeated_when_idempotent_or_allowed_by_the_setting() -> None:
    for name, repeat, expected in (("quote", False, [-5]), ("send_invoice", True, [5])):
        ledger = ListLedger(
            [llm_row(0, tool_calls(("c1", name, {"amount": 5}))), tool_row(1, "c1", name, status="failed")]
        )
        provider, world = QueueProvider(answer("done")), World()

        orchestrator(provider, world, repeat=repeat).run(agent(), TASK, ledger=ledger)

        assert world.invoices == expected
        assert ledger.writes[:2] == [("start", 1), ("complete", 1)] and ledger.rows[1].status == "completed"


def test_an_unfinished_call_of_a_tool_that_never_executes_is_answered_again() -> None:
    ledger = ListLedger(
        [
            llm_row(0, tool_calls(("c1", "send_invoice", {"amount": 5}))),
            tool_row(1, "c1", "send_invoice", status="started"),
        ]
    )
    provider, world = QueueProvider(answer("ok")), World()

    orchestrator(provider, world).run(agent(allowed_tools=("quote",)), TASK, ledger=ledger)

    assert world.invoices == []  # not allowed: the model is told so, as the first time
    assert ledger.rows[1].output == {
        "content": "tool 'send_invoice' is not allowed for this agent",
        "is_error": True,
    }


def test_a_run_that_had_switched_to_the_fallback_goes_on_there() -> None:
    ledger = ListLedger(
        [
            llm_row(
                0, tool_calls(("c1", "quote", {"amount": 1}), model="b-1"), provider="backup", model="b-1"
            ),
            tool_row(1, "c1", "quote"),
        ]
    )
    provider = QueueProvider(answer("ok", "b-1"))

    result = orchestrator(provider, World()).run(
        agent(fallback_provider="backup", fallback_model="b-1"), TASK, ledger=ledger
    )

    assert provider.requests[0].model == "b-1" and result.provider == "backup"


def test_replayed_turns_count_toward_max_turns() -> None:
    ledger = ListLedger([llm_row(0, tool_calls(("c1", "quote", {"amount": 1}))), tool_row(1, "c1", "quote")])

    with pytest.raises(MaxTurnsExceeded):
        orchestrator(QueueProvider(), World()).run(agent(max_turns=1), TASK, ledger=ledger)


def test_replayed_steps_call_no_hooks() -> None:
    class Seen(OrchestratorHooks):
        def __init__(self) -> None:
            self.events: list[str] = []

        def on_llm_start(self, request: ModelRequest, *, provider: str) -> None:
            self.events.append("llm")

        def on_tool_start(self, call: ToolCall) -> None:
            self.events.append(f"tool {call.id}")

    hooks = Seen()
    ledger = ListLedger(
        [
            llm_row(0, tool_calls(("c1", "quote", {"amount": 1}), ("c2", "quote", {"amount": 2}))),
            tool_row(1, "c1", "quote"),
        ]
    )

    orchestrator(QueueProvider(answer("ok")), World(), hooks=hooks).run(agent(), TASK, ledger=ledger)

    assert hooks.events == ["tool c2", "llm"]


# --- a ledger that does not fit -------------------------------------------------------------------------


def mismatched(rows: list[Row]) -> LedgerMismatch:
    provider, world = QueueProvider(answer("must not be asked")), World()
    with pytest.raises(LedgerMismatch) as caught:
        orchestrator(provider, world).run(agent(), TASK, ledger=ListLedger(rows))
    assert provider.requests == [] and world.invoices == []
    assert caught.value.retryable is False
    return caught.value


CALL = tool_calls(("c1", "send_invoice", {"amount": 5}))


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([llm_row(1, CALL)], "expected step 0 here"),
        ([llm_row(0, CALL), tool_row(2, "c1", "send_invoice")], "expected step 1 here"),
        ([tool_row(0, "c1", "send_invoice")], "a 'tool' step where a model call belongs"),
        ([llm_row(0, CALL), llm_row(1, answer("x"))], "a 'llm' step where tool call 'send_invoice' belongs"),
        (
            [llm_row(0, CALL), tool_row(1, "c1", "quote")],
            "tool 'quote' where the model called 'send_invoice'",
        ),
        (
            [llm_row(0, CALL), tool_row(1, "c9", "send_invoice")],
            "call id 'c9' where the model's call is 'c1'",
        ),
        ([llm_row(0, answer("x")), llm_row(1, answer("y"))], "it comes after the final answer"),
        ([llm_row(0, CALL, status="started"), tool_row(1, "c1", "send_invoice")], "it is started but later"),
        (
            [llm_row(0, CALL), tool_row(1, "c1", "send_invoice", status="failed"), llm_row(2, answer("x"))],
            "it is failed but later steps exist",
        ),
        ([Row(0, "llm", "m-1", "paused", {})], "unknown status 'paused'"),
    ],
)
def test_steps_out_of_place_fail_the_run_before_any_request(rows: list[Row], problem: str) -> None:
    error = mismatched(rows)

    assert problem in str(error) and "the run was not resumed" in str(error)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda output: output.update(tool_calls="c1"), "'tool_calls' is 'c1', not a list"),
        (lambda output: output.update(usage={"input_tokens": "10"}), "not the token counts"),
        (lambda output: output.update(content=42), "'content' is 42, not text"),
        (lambda output: output["tool_calls"][0].update(arguments=[1]), "arguments [1] are not an object"),
        (lambda output: output["tool_calls"][0].pop("id"), "'id' is None, not text"),
        (lambda output: output.update(cost_usd="cheap"), "'cost_usd' 'cheap' is not a number"),
    ],
)
def test_an_edited_model_call_fails_the_run_before_any_request(edit: Any, problem: str) -> None:
    row = llm_row(0, CALL)
    assert row.output is not None
    edit(row.output)

    assert problem in str(mismatched([row, tool_row(1, "c1", "send_invoice")]))


def test_an_edited_tool_result_or_missing_payload_fails_the_run() -> None:
    edited = Row(1, "tool", "send_invoice", "completed", {"call_id": "c1"}, {"content": 5})
    assert "lacks the tool result" in str(mismatched([llm_row(0, CALL), edited]))
    assert "its output is NoneType" in str(mismatched([Row(0, "llm", "m-1", "completed", {"turn": 1}, None)]))
    assert "'provider' is None" in str(
        mismatched([Row(0, "llm", "m-1", "completed", {}, llm_row(0, CALL).output)])
    )


def test_a_model_call_stored_clipped_cannot_be_resumed_from() -> None:
    for response in (
        answer("x" * (MAX_STEP_TEXT_CHARS + 10)),
        tool_calls(("c1", "quote", {"amount": 1, "note": "y" * (MAX_STEP_TEXT_CHARS + 1)})),
    ):
        row = llm_row(0, response)
        assert row.output is not None and row.output["clipped"] is True

        assert "stored clipped" in str(mismatched([row]))


def test_payloads_keep_strings_whole_up_to_the_cap_and_name_the_length_beyond_it() -> None:
    short, clipped = clip_payload({"a": ["x" * MAX_STEP_TEXT_CHARS], "n": 1})
    assert clipped is False and short == {"a": ["x" * MAX_STEP_TEXT_CHARS], "n": 1}

    long, clipped = clip_payload({"a": "x" * (MAX_STEP_TEXT_CHARS + 5)})
    assert clipped is True
    assert long["a"].endswith(f"... [5 more chars; {MAX_STEP_TEXT_CHARS + 5} in total]")
    assert len(long["a"]) < MAX_STEP_TEXT_CHARS + 50


def test_tools_see_no_call_outside_a_run() -> None:
    assert current_tool_call() is None
    outcome = default_registry().execute("calculate", {"expression": "1+1"})
    assert outcome == ToolOutcome("2") and current_tool_call() is None
