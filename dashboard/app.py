"""The dashboard's ASGI app: routes, templates, static files, errors (docs/architecture.md, *Dashboard*).

``create_app(dashboard, access)`` builds it from the queue facade and the access rules; ``from_runtime``
does that for a process's runtime (what ``agentq dashboard`` serves). Nothing connects at construction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import jinja2
import redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from actors.runtime import Runtime
from config.errors import AgentQueueError
from dashboard import api, pages
from dashboard.access import Access
from dashboard.extensions import Extensions
from dashboard.guard import Guard
from dashboard.limits import limit_pages
from dashboard.routes import status_of
from dashboard.service import Dashboard
from taskstore import TaskStatus

HERE = Path(__file__).parent


def from_runtime(runtime: Runtime, *, extensions: Extensions | None = None) -> Starlette:
    """The dashboard of a process's runtime: its queue, budget caps, broker's Redis and settings."""
    settings = runtime.settings
    extensions = extensions or Extensions()
    usage = getattr(getattr(runtime.orchestrator(), "limiter", None), "usage", None)
    if callable(usage):  # issue 17's shared provider limits: show the buckets in use
        extensions.pages.extend(limit_pages(usage))
    dashboard = Dashboard(
        runtime.queue,
        budget=runtime.budget,
        redis=getattr(runtime.broker, "client", None),
        namespace=getattr(runtime.broker, "namespace", "agentq"),
        trace_url_template=settings.trace_url_template,
        refresh_s=settings.dashboard_refresh_s,
        extensions=extensions,
    )
    return create_app(dashboard, Access.from_settings(settings))


def create_app(dashboard: Dashboard, access: Access) -> Starlette:
    """The ASGI app serving ``dashboard`` to the operators ``access`` admits."""
    app = Starlette(
        routes=_routes(dashboard),
        middleware=[Middleware(Guard, access=access)],
        exception_handlers={AgentQueueError: _error, HTTPException: _error, redis.RedisError: _error},
    )
    app.state.dashboard = dashboard
    app.state.access = access
    app.state.templates = templates()
    return app


def _routes(dashboard: Dashboard) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/", pages.overview),
        Route("/partials/overview", pages.overview_live),
        Route("/tasks", pages.tasks),
        Route("/tasks/{task_id}", pages.task_page),
        Route("/tasks/{task_id}/{action}", pages.task_action, methods=["POST"]),
        Route("/dead-letters", pages.dead_letters),
        Route("/bulk/{action}", pages.bulk_confirm),
        Route("/bulk/{action}", pages.bulk_do, methods=["POST"]),
        Route("/queue/{action}", pages.queue_switch, methods=["POST"]),
        Route("/schedules", pages.schedules),
        Route("/schedules/{task_id}/{action}", pages.schedule_action, methods=["POST"]),
        Route("/approvals", pages.approvals),
        Route("/workers", pages.workers),
        Route("/partials/workers", pages.workers_live),
        Route("/login", pages.login),
        Route("/login", pages.login_post, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/api/health", api.health),
        Route("/api/csrf", api.csrf),
        Route("/api/stats", api.stats),
        Route("/api/tasks", api.tasks),
        Route("/api/tasks/bulk/{action}", api.bulk, methods=["POST"]),
        Route("/api/tasks/{task_id}", api.task),
        Route("/api/tasks/{task_id}/events", api.events),
        Route("/api/tasks/{task_id}/{action}", api.task_action, methods=["POST"]),
        Route("/api/queue/{action}", api.queue_switch, methods=["POST"]),
        Route("/api/schedules", api.schedules),
        Route("/api/schedules/{task_id}/{action}", api.schedule_action, methods=["POST"]),
        Route("/api/approvals", api.approvals),
        Route("/api/workers", api.workers),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    for page in dashboard.extensions.pages:
        routes.insert(0, Route(page.path, page.endpoint, methods=list(page.methods)))
    return routes


async def _error(request: Request, exc: Exception) -> Response:
    """An error as JSON (API) or as a page: the message names the bad value; 500s say nothing more."""
    status = exc.status_code if isinstance(exc, HTTPException) else status_of(exc)
    message = str(exc.detail) if isinstance(exc, HTTPException) else str(exc)
    if isinstance(exc, redis.RedisError):
        status, message = (
            503,
            f"Redis did not answer ({type(exc).__name__}); pages that need no Redis still work",
        )
    elif status >= 500 and not isinstance(exc, AgentQueueError):
        message = "internal error"
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message, "status": status}, status_code=status)
    return pages.render(request, "error.html", status=status, title=f"Error {status}", error=message)


def templates() -> jinja2.Environment:
    """The templates' environment: autoescaped, undefined names are errors, a few formatting filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, ago=ago, usd=usd, short=short, percent=percent)
    env.globals.update(static=_static_url, task_statuses=[status.value for status in TaskStatus])
    return env


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def ago(value: datetime | float | None, now: float | None = None) -> str:
    """How long ago ``value`` was, roughly (``12 s ago``, ``3 min ago``, ``2 h ago``, ``4 d ago``)."""
    if value is None:
        return "—"
    moment = value.timestamp() if isinstance(value, datetime) else value
    seconds = int((now if now is not None else datetime.now(UTC).timestamp()) - moment)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def usd(value: Decimal | None) -> str:
    return "—" if value is None else f"${value:,.4f}"


def short(value: str | None) -> str:
    """A UUID's first block (the full id is in the link or the title attribute)."""
    return (value or "—").split("-")[0]


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _static_url(name: str) -> str:
    stamp = int((HERE / "static" / name).stat().st_mtime)
    return f"/static/{name}?v={stamp}"
