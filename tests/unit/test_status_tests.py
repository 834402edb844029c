"""Every statement of functions.sql that finds tasks by id tests their status in a form no index serves.

Why: see the head of ``taskstore/sql/functions.sql`` and ``tests/taskstore/test_claim_reads.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parents[2] / "taskstore" / "sql" / "functions.sql"
#: The frozen copy that 0009 installed, before the rule: the check must find its bare tests.
BEFORE_THE_RULE = FUNCTIONS.parent / "history" / "0009_functions.sql"

#: A WHERE clause, up to the statement's end or the next clause or statement (a subquery's WHERE is its own).
_WHERE = re.compile(
    r"\bWHERE\b(.*?)(?=;|\b(?:WHERE|RETURNING|ON CONFLICT|ORDER BY|GROUP BY|SELECT|UPDATE|INSERT|SET)\b)",
    re.DOTALL,
)
#: A task found by its id: ``id = …`` or ``t.id = …`` (not ``r.id``, ``a.id`` or ``task_id``).
_BY_ID = re.compile(r"(?<![\w.])(?:t\.)?id = ")
#: A status test wrapped so that no index serves it: ``(status = ANY(…)) IS TRUE``.
_WRAPPED = re.compile(
    r"\((?:t\.)?status (?:=|IN)\s*(?:ANY)?\s*\([^()]*\)\) IS TRUE|\((?:t\.)?status = '\w+'\) IS TRUE"
)
#: A status test an index can serve: ``status = 'queued'``, ``t.status IN (…)``, ``status = ANY(…)``.
_BARE = re.compile(r"(?<![\w.])(?:t\.)?status (?:=|IN\b|<>)")


def bare_status_tests(text: str) -> list[str]:
    """The WHERE clauses of ``text`` that find tasks by id and test their status with a bare comparison."""
    found = []
    for match in _WHERE.finditer(text):
        clause = match.group(1)
        if _BY_ID.search(clause) and _BARE.search(_WRAPPED.sub("", clause)):
            found.append(" ".join(clause.split())[:160])
    return found


def test_no_statement_that_finds_tasks_by_id_tests_their_status_with_a_bare_comparison() -> None:
    assert bare_status_tests(FUNCTIONS.read_text(encoding="utf-8")) == []


def test_the_check_finds_the_bare_tests_of_the_functions_before_the_rule() -> None:
    found = bare_status_tests(BEFORE_THE_RULE.read_text(encoding="utf-8"))

    assert any("status = 'queued'" in clause and "ANY(p_task_ids)" in clause for clause in found)
    assert any("status = 'pending'" in clause for clause in found)
    assert len(found) >= 20


def test_wrapped_and_null_safe_tests_pass_and_bare_ones_do_not() -> None:
    update = "UPDATE x SET a = 1 WHERE "
    assert bare_status_tests(update + "id = p_task_id AND status IS NOT DISTINCT FROM 'queued';") == []
    assert bare_status_tests(update + "id = p_task_id AND (status = ANY(p_statuses)) IS TRUE;") == []
    assert bare_status_tests("SELECT 1 FROM x WHERE organization_id = org AND status = 'running';") == []
    assert bare_status_tests(update + "t.id = ANY(p_ids) AND t.status = 'queued' RETURNING t.*;")
    assert bare_status_tests(update + "id = p_id AND status IN ('pending', 'queued');")
