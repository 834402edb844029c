"""The provider limits and budgets in use (issue 17's shared buckets), as a page and its JSON twin.

Issue 17 gives the orchestrator a limiter whose ``usage()`` lists each bucket in use now (requests and
tokens used in its window against its capacity, calls in flight and waiting, a provider's pause) — what
``agentq limits`` prints. :func:`limit_pages` turns any such reader into the ``/limits`` page and
``/api/limits``; :func:`dashboard.app.from_runtime` adds them when the runtime's orchestrator has a
limiter. Each bucket is shown field by field, as the limiter reports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashboard.extensions import ExtraPage
from dashboard.routes import blocking
from dashboard.service import require
from dashboard.views import plain

#: Reads the buckets in use now (dataclasses or mappings, one per bucket).
UsageReader = Callable[[], Sequence[Any]]


def bucket_rows(buckets: Sequence[Any]) -> list[dict[str, Any]]:
    """Each bucket as a plain mapping of its fields (JSON-ready)."""
    rows = []
    for bucket in buckets:
        if dataclasses.is_dataclass(bucket) and not isinstance(bucket, type):
            rows.append(plain(dataclasses.asdict(bucket)))
        elif isinstance(bucket, Mapping):
            rows.append(plain(dict(bucket)))
        else:
            raise TypeError(f"a bucket must be a dataclass or a mapping, not {type(bucket).__name__}")
    return rows


def limit_pages(read: UsageReader) -> list[ExtraPage]:
    """The ``/limits`` page and ``/api/limits`` over ``read`` (operators of every organization only)."""

    async def rows(request: Request) -> list[dict[str, Any]]:
        require(
            request.state.principal.sees_everything, "limits are shown to operators of every organization"
        )
        return bucket_rows(await blocking(read))

    async def page(request: Request) -> Response:
        from dashboard.pages import render

        found = await rows(request)
        columns = list(found[0]) if found else []
        return render(request, "limits.html", title="Provider limits", buckets=found, columns=columns)

    async def api(request: Request) -> Response:
        return JSONResponse({"items": await rows(request)})

    return [
        ExtraPage("/limits", "Limits", page, global_only=True),
        ExtraPage("/api/limits", "", api, nav=False, global_only=True),
    ]
