"""The JSON API (the README's *Dashboard* section lists it). Scripts authenticate with
``Authorization: Bearer <token>``; a browser session may call it too, with the ``X-CSRF-Token`` header on
changes. Errors are ``{"error": "<message naming the bad value>", "status": <code>}``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from actors.events.model import parse_event_id
from dashboard.events import queue_events, row_events, sse
from dashboard.params import FILTER_PARAMS, BadParameter, parse_filter, parse_list_query
from dashboard.routes import act, action_of, audit_bulk, blocking, check_csrf, csrf_token, dashboard_of, who
from dashboard.service import decide_of, describe_filter
from dashboard.views import (
    approval_json,
    job_json,
    overview_json,
    page_json,
    run_json,
    schedule_json,
    worker_json,
)
from taskstore import utcnow


async def health(request: Request) -> Response:
    """Whether the store and Redis answer (for load balancers; no login, no detail)."""
    dashboard = dashboard_of(request)
    checks = {"store": "ok", "redis": "ok" if dashboard.redis is not None else "absent"}
    try:
        await blocking(lambda: dashboard.queue.store.queue_counts(now=utcnow()))
    except Exception:  # any failure is "down" here; the detail is in the server's log
        checks["store"] = "down"
    if dashboard.redis is not None:
        try:
            await blocking(dashboard.redis.ping)
        except Exception:
            checks["redis"] = "down"
    healthy = "down" not in checks.values()
    return JSONResponse(
        {"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503
    )


async def csrf(request: Request) -> Response:
    """This session's CSRF token, for a script that uses a cookie session instead of a bearer token."""
    return JSONResponse({"csrf_token": csrf_token(request)})


async def stats(request: Request) -> Response:
    view = await blocking(dashboard_of(request).overview, who(request))
    return JSONResponse(overview_json(view))


async def tasks(request: Request) -> Response:
    query = parse_list_query(dict(request.query_params), organization_id=who(request).organization_id)
    page = await blocking(dashboard_of(request).tasks, who(request), query)
    return JSONResponse(page_json(page))


async def task(request: Request) -> Response:
    dashboard = dashboard_of(request)
    job = await blocking(dashboard.job, who(request), request.path_params["task_id"])
    steps = await blocking(dashboard.steps, job.task)
    runs = [run_json(run, dashboard.trace_url(run.trace_id)) for run in job.runs]
    return JSONResponse(job_json(job, runs, steps))


async def events(request: Request) -> Response:
    """The task's events as ``text/event-stream`` until it is finished (``Last-Event-ID`` resumes)."""
    dashboard = dashboard_of(request)
    principal = who(request)
    task = await blocking(dashboard.task, principal, request.path_params["task_id"])
    after = request.headers.get("last-event-id") or request.query_params.get("after")
    source = dashboard.extensions.event_source
    if source is None and dashboard.redis is not None:
        if after:
            parse_event_id(after)  # a malformed id is a 400 before the stream starts
        source = queue_events(dashboard.queue)
    if source is None:
        source = row_events(lambda: dashboard.job(principal, task.id))
    stream = source(task.id, after)

    async def body() -> object:
        yield "retry: 2000\n\n"
        async for event in stream:
            if await request.is_disconnected():
                return
            yield sse(event)

    return StreamingResponse(
        body(),  # type: ignore[arg-type]
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


async def task_action(request: Request) -> Response:
    task_id, action = (
        request.path_params["task_id"],
        action_of(request, ("retry", "cancel", "approve", "reject")),
    )
    check_csrf(request, None)
    dashboard = dashboard_of(request)
    if action in ("approve", "reject"):
        text = await decision_text(request, "note" if action == "approve" else "reason")
        decided = await act(request, action, f"task:{task_id}", decide_of(dashboard, action), who(request),
                            task_id, text)  # fmt: skip
        return JSONResponse({"id": decided.id, "status": decided.status.value})
    if action == "retry":
        job = await act(request, "retry", f"task:{task_id}", dashboard.retry, who(request), task_id)
        return JSONResponse({"id": job.id, "status": job.status.value})
    cancelled = await act(request, "cancel", f"task:{task_id}", dashboard.cancel, who(request), task_id)
    return JSONResponse({"id": cancelled.id, "status": cancelled.status.value})


async def bulk(request: Request) -> Response:
    """Retry or cancel every task the filter (query parameters) selects, at most 1,000 per call; needs
    ``confirm=true``. Answers with what matched and each task's outcome."""
    action = action_of(request, ("retry", "cancel"))
    check_csrf(request, None)
    params = dict(request.query_params)
    given = {name: params[name].strip() for name in FILTER_PARAMS if params.get(name, "").strip()}
    task_filter = parse_filter(given)
    dashboard = dashboard_of(request)
    selection = await blocking(dashboard.bulk_selection, who(request), action, task_filter)
    if params.get("confirm") != "true":
        raise BadParameter(
            "confirm",
            params.get("confirm"),
            f"'true' (bulk {action} would touch {len(selection.task_ids)} tasks)",
        )
    outcomes = await blocking(dashboard.bulk, who(request), selection)
    done = audit_bulk(request, action, describe_filter(task_filter), outcomes)
    return JSONResponse(
        {
            "action": action,
            "matched": len(selection.task_ids),
            "more": selection.more,
            "done": done,
            "outcomes": [{"id": task_id, "outcome": outcome} for task_id, outcome in outcomes],
        }
    )


async def queue_switch(request: Request) -> Response:
    action = action_of(request, ("pause", "resume"))
    check_csrf(request, None)
    dashboard = dashboard_of(request)
    await act(
        request, action, "queue", dashboard.pause if action == "pause" else dashboard.resume, who(request)
    )
    return JSONResponse({"paused": await blocking(dashboard.queue.is_paused)})


async def schedules(request: Request) -> Response:
    page_text = request.query_params.get("page", "0")
    if not page_text.isdigit():
        raise BadParameter("page", page_text, "a whole number")
    rows = await blocking(dashboard_of(request).schedules, who(request), int(page_text))
    return JSONResponse({"items": [schedule_json(task) for task in rows]})


async def schedule_action(request: Request) -> Response:
    task_id, action = request.path_params["task_id"], action_of(request, ("run", "enable", "disable"))
    check_csrf(request, None)
    dashboard = dashboard_of(request)
    job = await act(request, f"schedule_{action}", f"task:{task_id}", dashboard.schedule_action,
                    who(request), task_id, action)  # fmt: skip
    return JSONResponse(schedule_json(job.task))


async def decision_text(request: Request, name: str) -> str | None:
    """The note (approve) or reason (reject): a JSON body's ``name``, a form field, or a query parameter."""
    value: object = request.query_params.get(name)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            raise BadParameter("body", "(not JSON)", "a JSON object") from None
        if not isinstance(body, dict):
            raise BadParameter("body", body, "a JSON object")
        value = body.get(name, value)
    elif content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(name, value)
    if value is not None and not isinstance(value, str):
        raise BadParameter(name, value, "a string")
    return value.strip() or None if isinstance(value, str) else None


async def approvals(request: Request) -> Response:
    page_text = request.query_params.get("page", "0")
    if not page_text.isdigit():
        raise BadParameter("page", page_text, "a whole number")
    items = await blocking(dashboard_of(request).approvals, who(request), int(page_text))
    return JSONResponse({"items": [approval_json(item) for item in items]})


async def workers(request: Request) -> Response:
    found = await blocking(dashboard_of(request).workers, who(request))
    return JSONResponse({"items": [worker_json(worker) for worker in found]})
