"""The HTML pages: server-rendered (Jinja2, autoescaped) with a little JavaScript for live refresh.

A form that changes something posts back here with its CSRF token; on success the page redirects (303)
to where the operator was, with a fixed notice; a refusal re-renders the page with the reason and the
action's HTTP status (409 for a task that changed meanwhile, 403 for a read-only token, …).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from actors.schedules.cron import ScheduleError, parse_schedule
from config.errors import AgentQueueError
from dashboard.access import SESSION_COOKIE, SESSION_S, new_nonce
from dashboard.audit import audit
from dashboard.params import FILTER_PARAMS, encode_cursor, parse_filter, parse_list_query
from dashboard.routes import (
    act,
    action_of,
    audit_bulk,
    blocking,
    check_csrf,
    client_of,
    csrf_token,
    dashboard_of,
    status_of,
    who,
)
from dashboard.service import (
    APPROVALS_PAGE,
    MAX_BULK,
    SCHEDULES_PAGE,
    BulkSelection,
    decide_of,
    describe_filter,
)
from dashboard.views import latency_ms, pretty
from taskstore import Task, TaskStatus, utcnow

#: Notices a redirect may ask the next page to show (by key: no text travels in the URL).
NOTICES = {
    "retried": "Task retried: it is queued again with a fresh set of attempts.",
    "cancelled": "Task cancelled (a running one stops at its next step).",
    "paused": "Queue paused: no worker starts a task until it is resumed; running tasks finish.",
    "resumed": "Queue resumed.",
    "run": "Schedule fired: its task is queued.",
    "enabled": "Schedule enabled.",
    "disabled": "Schedule disabled: it keeps its cron expression and time zone.",
    "logged_out": "Logged out.",
    "approved": "Approved: the task is queued again and runs the tool.",
    "rejected": "Rejected: the task is queued again and its model is told why.",
}
#: The actions a task page's forms post, and the notice each one's success shows.
TASK_ACTIONS = ("retry", "cancel", "approve", "reject")
ACTION_NOTICES = {"retry": "retried", "cancel": "cancelled", "approve": "approved", "reject": "rejected"}


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` with the page context every page has (operator, CSRF token, navigation)."""
    env: Environment = request.app.state.templates
    dashboard = dashboard_of(request)
    principal = request.state.principal
    context.setdefault("notice", NOTICES.get(request.query_params.get("notice", "")))
    html = env.get_template(template).render(
        request=request,
        who=principal,
        csrf_token=csrf_token(request),
        refresh_s=dashboard.refresh_s,
        extra_pages=[
            page
            for page in dashboard.extensions.pages
            if page.nav
            and principal is not None
            and (principal.can_act or not page.admin_only)
            and (principal.sees_everything or not page.global_only)
        ],
        open_access=request.app.state.access.open,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status)


def back(request: Request, form: FormData, default: str, notice: str) -> RedirectResponse:
    """Redirect to the form's ``next`` (a path of this site only) with ``notice``."""
    target = str(form.get("next") or default)
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = default
    separator = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{separator}notice={notice}", status_code=303)


async def posted(request: Request) -> FormData:
    form = await request.form()
    csrf = form.get("csrf_token")
    check_csrf(request, csrf if isinstance(csrf, str) else None)
    return form


# --- overview -------------------------------------------------------------------------------------


async def overview(request: Request) -> Response:
    view = await blocking(dashboard_of(request).overview, who(request))
    return render(request, "overview.html", title="Overview", view=view, now_minute=_this_minute())


async def overview_live(request: Request) -> Response:
    view = await blocking(dashboard_of(request).overview, who(request))
    return render(request, "overview_live.html", view=view, now_minute=_this_minute())


def _this_minute() -> datetime:
    return utcnow().replace(second=0, microsecond=0)


# --- tasks ---------------------------------------------------------------------------------------


async def tasks(request: Request, *, dead_letters: bool = False) -> Response:
    params = dict(request.query_params)
    if dead_letters:
        params["status"] = TaskStatus.FAILED.value
    query = parse_list_query(params, organization_id=who(request).organization_id)
    page = await blocking(dashboard_of(request).tasks, who(request), query)
    base = request.url.path
    given = {name: value for name, value in query.given.items() if not (dead_letters and name == "status")}
    if query.limit != 50:
        given["limit"] = str(query.limit)
    links = {
        "first": f"{base}?{urlencode(given)}" if (query.after or query.before) else None,
        "newer": f"{base}?{urlencode({**given, 'before': encode_cursor(page.newer)})}"
        if page.newer
        else None,
        "older": f"{base}?{urlencode({**given, 'after': encode_cursor(page.older)})}" if page.older else None,
    }
    return render(
        request,
        "tasks.html",
        title="Dead letters" if dead_letters else "Tasks",
        page=page,
        filters=query.given,
        filter_query=urlencode(query.given),
        links=links,
        limit=query.limit,
        dead_letters=dead_letters,
        statuses=[status.value for status in TaskStatus],
        kinds=sorted(dashboard_of(request).queue.agent_kinds()),
    )


async def dead_letters(request: Request) -> Response:
    return await tasks(request, dead_letters=True)


async def task_page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    dashboard = dashboard_of(request)
    job = await blocking(dashboard.job, who(request), request.path_params["task_id"])
    steps = await blocking(dashboard.steps, job.task)
    panels = []
    for panel in dashboard.extensions.task_panels:
        context = await blocking(panel.context, job)  # a panel may read the database
        if context is not None:
            env: Environment = request.app.state.templates
            template = (
                env.get_template(panel.template) if panel.template else env.from_string(panel.source or "")
            )
            panels.append((panel.title, template.render(**context)))
    return render(
        request,
        "task.html",
        status=status,
        error=error,
        title=job.task.title,
        job=job,
        steps=steps,
        panels=panels,
        trace_url=dashboard.trace_url,
        pretty=pretty,
        latency_ms=latency_ms,
        finished=job.task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED),
    )


async def task_action(request: Request) -> Response:
    action = action_of(request, TASK_ACTIONS)
    form = await posted(request)
    task_id = request.path_params["task_id"]
    dashboard = dashboard_of(request)
    principal = who(request)
    try:
        if action in ("approve", "reject"):
            text = str(form.get("note" if action == "approve" else "reason") or "").strip() or None
            await act(
                request, action, f"task:{task_id}", decide_of(dashboard, action), principal, task_id, text
            )
        else:
            function = dashboard.retry if action == "retry" else dashboard.cancel
            await act(request, action, f"task:{task_id}", function, principal, task_id)
    except AgentQueueError as exc:
        if status_of(exc) == 404:
            raise
        if form.get("next") == "/approvals":
            return await approvals(request, error=str(exc), status=status_of(exc))
        return await task_page(request, error=str(exc), status=status_of(exc))
    return back(request, form, f"/tasks/{task_id}", ACTION_NOTICES[action])


async def approvals(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    page_text = request.query_params.get("page", "0")
    page = int(page_text) if page_text.isdigit() else 0
    items = await blocking(dashboard_of(request).approvals, who(request), page)
    return render(
        request, "approvals.html", status=status, error=error, title="Approvals", items=items, page=page,
        more=len(items) == APPROVALS_PAGE, pretty=pretty,
    )  # fmt: skip


# --- bulk actions: a confirmation page, then the action -------------------------------------------


async def bulk_confirm(request: Request) -> Response:
    action = action_of(request, ("retry", "cancel"))
    selection, task_filter = await _selection(request, action, dict(request.query_params))
    return render(
        request,
        "bulk.html",
        title=f"Bulk {action}",
        selection=selection,
        described=describe_filter(task_filter),
        fields={name: value for name, value in request.query_params.items() if name in FILTER_PARAMS},
        max_bulk=MAX_BULK,
    )


async def bulk_do(request: Request) -> Response:
    action = action_of(request, ("retry", "cancel"))
    form = await posted(request)
    params = {name: str(value) for name, value in form.items() if name in FILTER_PARAMS}
    selection, task_filter = await _selection(request, action, params)
    if form.get("confirm") != "yes":
        return render(request, "bulk.html", status=400, title=f"Bulk {action}", selection=selection,
                      described=describe_filter(task_filter), fields=params, max_bulk=MAX_BULK,
                      error="Tick the confirmation box to go ahead.")  # fmt: skip
    outcomes = await blocking(dashboard_of(request).bulk, who(request), selection)
    done = audit_bulk(request, action, describe_filter(task_filter), outcomes)
    return render(
        request, "bulk_done.html", title=f"Bulk {action}", action=action, outcomes=outcomes, done=done
    )


async def _selection(request: Request, action: str, params: dict[str, str]) -> tuple[BulkSelection, Any]:
    given = {name: params[name].strip() for name in FILTER_PARAMS if params.get(name, "").strip()}
    task_filter = parse_filter(given)
    dashboard = dashboard_of(request)
    selection = await blocking(dashboard.bulk_selection, who(request), action, task_filter)
    return selection, task_filter


# --- queue, schedules, workers ----------------------------------------------------------------------


async def queue_switch(request: Request) -> Response:
    action = action_of(request, ("pause", "resume"))
    form = await posted(request)
    dashboard = dashboard_of(request)
    function = dashboard.pause if action == "pause" else dashboard.resume
    await act(request, action, "queue", function, who(request))
    return back(request, form, "/", "paused" if action == "pause" else "resumed")


async def schedules(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    page_text = request.query_params.get("page", "0")
    page = int(page_text) if page_text.isdigit() else 0
    rows = await blocking(dashboard_of(request).schedules, who(request), page)
    return render(
        request, "schedules.html", status=status, error=error, title="Schedules",
        rows=[_schedule_row(task) for task in rows], page=page, more=len(rows) == SCHEDULES_PAGE,
    )  # fmt: skip


def _schedule_row(task: Task) -> dict[str, Any]:
    row: dict[str, Any] = {"task": task, "local": None, "problem": None}
    try:
        schedule = parse_schedule(task.schedule_cron or "", task.schedule_timezone)
        row["local"] = schedule.local(task.next_run_at) if task.next_run_at else None
    except ScheduleError as exc:
        row["problem"] = str(exc)
    return row


async def schedule_action(request: Request) -> Response:
    action = action_of(request, ("run", "enable", "disable"))
    form = await posted(request)
    task_id = request.path_params["task_id"]
    try:
        await act(request, f"schedule_{action}", f"task:{task_id}", dashboard_of(request).schedule_action,
                  who(request), task_id, action)  # fmt: skip
    except AgentQueueError as exc:
        return await schedules(request, error=str(exc), status=status_of(exc))
    return back(request, form, "/schedules", {"run": "run", "enable": "enabled"}.get(action, "disabled"))


async def workers(request: Request) -> Response:
    found = await blocking(dashboard_of(request).workers, who(request))
    return render(request, "workers.html", title="Workers", workers=found, now=_now())


async def workers_live(request: Request) -> Response:
    found = await blocking(dashboard_of(request).workers, who(request))
    return render(request, "workers_live.html", workers=found, now=_now())


def _now() -> float:
    return time.time()


# --- login -------------------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    if request.app.state.access.open:
        return RedirectResponse("/", status_code=303)
    return render(request, "login.html", title="Log in", next=request.query_params.get("next", "/"))


async def login_post(request: Request) -> Response:
    access = request.app.state.access
    form = await posted(request)
    token, name = str(form.get("token") or ""), str(form.get("name") or "")
    target = str(form.get("next") or "/")
    grant = access.match(token) if token else None
    if grant is None:
        audit(None, client_of(request), "login", "dashboard", "refused: invalid token")
        return render(request, "login.html", status=401, title="Log in", next=target, error="Invalid token.")
    principal = access.principal_for(grant, name)
    audit(principal, client_of(request), "login", "dashboard", "ok")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        access.session_value(principal, new_nonce()),
        max_age=SESSION_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    await posted(request)
    audit(who(request), client_of(request), "logout", "dashboard", "ok")
    response = RedirectResponse("/login?notice=logged_out", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
