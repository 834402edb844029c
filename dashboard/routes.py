"""What the page and API routes share: the dashboard of the request, its operator, the CSRF check, running
blocking work off the event loop, the audit line of an action, and errors mapped to HTTP statuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from actors.errors import (
    AgentInactive,
    BrokerUnavailable,
    InvalidArgument,
    ScheduleNotChanged,
    UnknownAgentKind,
)
from actors.events.reader import EventsUnavailable
from actors.schedules.cron import ScheduleError
from config.errors import AgentQueueError, ConfigError
from dashboard.access import Access, Principal
from dashboard.audit import audit
from dashboard.params import BadParameter
from dashboard.service import Dashboard, Forbidden
from taskstore import AgentNotFound, InvalidTaskId, InvalidTransition, StoreUnavailable, TaskNotFound

T = TypeVar("T")


class CsrfRefused(Forbidden):
    """A request that changes something came without a valid CSRF token."""

    def __init__(self) -> None:
        super().__init__(
            "missing or invalid CSRF token: send the form's csrf_token or the X-CSRF-Token header"
            " (GET /api/csrf gives one), or authenticate with Authorization: Bearer <token>"
        )


#: HTTP status of each error an action or a read may raise (the first matching class wins).
STATUSES: tuple[tuple[type[Exception], int], ...] = (
    (BadParameter, 400),
    (InvalidTaskId, 400),
    (InvalidArgument, 400),
    (TaskNotFound, 404),
    (Forbidden, 403),
    (InvalidTransition, 409),
    (ScheduleNotChanged, 409),
    (ScheduleError, 409),
    (AgentNotFound, 409),
    (AgentInactive, 409),
    (UnknownAgentKind, 409),
    (ConfigError, 409),
    (BrokerUnavailable, 503),
    (EventsUnavailable, 503),
    (StoreUnavailable, 503),
    (AgentQueueError, 400),
)


def status_of(exc: Exception) -> int:
    return next((status for kind, status in STATUSES if isinstance(exc, kind)), 500)


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def access_of(request: Request) -> Access:
    access: Access = request.app.state.access
    return access


def who(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def client_of(request: Request) -> str:
    return request.client.host if request.client else "-"


def action_of(request: Request, allowed: tuple[str, ...]) -> str:
    """The route's ``{action}``, one of ``allowed`` (else 404 naming them)."""
    action = str(request.path_params["action"])
    if action not in allowed:
        raise HTTPException(404, f"no action {action[:40]!r} here; there are {', '.join(allowed)}")
    return action


def csrf_token(request: Request) -> str:
    """The CSRF token of this request's session (forms and scripts echo it back)."""
    return access_of(request).csrf_token(request.state.csrf_nonce)


def check_csrf(request: Request, token: str | None) -> None:
    """Refuse a change without the CSRF token, unless a bearer token authenticated the request."""
    if request.state.bearer:
        return
    token = token or request.headers.get("x-csrf-token")
    if not access_of(request).csrf_valid(request.state.csrf_nonce, token):
        audit(who(request), client_of(request), "csrf", request.url.path, "refused")
        raise CsrfRefused()


async def blocking(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (database, Redis) in a worker thread."""
    return await run_in_threadpool(function, *args)


async def act(request: Request, action: str, target: str, function: Callable[..., T], *args: Any) -> T:
    """Do an action in a worker thread and write its audit line, whether it succeeds or is refused."""
    try:
        result = await blocking(function, *args)
    except AgentQueueError as exc:
        audit(who(request), client_of(request), action, target, f"refused: {exc}")
        raise
    audit(who(request), client_of(request), action, target, "ok")
    return result


def audit_bulk(request: Request, action: str, described: str, outcomes: list[tuple[str, str]]) -> int:
    """One audit line per task of a bulk action and one for the whole; returns how many were done."""
    for task_id, outcome in outcomes:
        audit(who(request), client_of(request), action, f"task:{task_id}", outcome)
    done = sum(1 for _, outcome in outcomes if outcome == "ok")
    audit(
        who(request),
        client_of(request),
        f"bulk_{action}",
        f"bulk {described}",
        f"{done} of {len(outcomes)} done",
    )
    return done
