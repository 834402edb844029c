"""The audit log: one line per dashboard action, saying who did what to what, when, and how it went.

Lines go to the ``agentq.audit`` logger (so ``AGENTQ_LOG_FORMAT=json`` makes them JSON like every other
line), always at INFO, e.g.::

    [AgentTaskQueue] audit at=2026-12-01T09:30:00.123456+00:00 who="alice" role=admin org=* ip=10.0.0.7
    action=retry target=task:5c53… outcome=ok
"""

from __future__ import annotations

import logging
from datetime import datetime

from dashboard.access import Principal, clean_name
from taskstore import utcnow

logger = logging.getLogger("agentq.audit")
#: Longest field of an audit line (an error message, a filter).
MAX_FIELD_CHARS = 300


def audit(
    who: Principal | None,
    client: str,
    action: str,
    target: str,
    outcome: str,
    *,
    now: datetime | None = None,
) -> None:
    """Log one action. ``who`` None: an unauthenticated attempt (a failed login)."""
    logger.info(
        "[AgentTaskQueue] audit at=%s who=%s role=%s org=%s ip=%s action=%s target=%s outcome=%s",
        (now or utcnow()).isoformat(),
        _value(who.name if who is not None else "-"),
        who.role if who is not None else "-",
        (who.organization_id or "*") if who is not None else "-",
        _value(client),
        action,
        _value(target),
        _value(outcome),
    )


def _value(text: str) -> str:
    """``text`` as one field of the line: cleaned, and quoted when it has spaces."""
    cleaned = clean_name(text, MAX_FIELD_CHARS) or "-"
    return f'"{cleaned}"' if " " in cleaned else cleaned
