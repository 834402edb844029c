"""The ASGI middleware in front of every route: who is asking, may they, and the headers every answer gets.

For each HTTP request it resolves the operator (:class:`~dashboard.access.Principal`) from a bearer token
or the session cookie (or, without tokens, the local operator), keeps the CSRF nonce at hand, and refuses:

* without tokens, a request addressed to a name other than a loopback one (DNS rebinding) — 400;
* an unauthenticated request to anything but the login page, static files and ``/api/health`` — 401 from
  the API (``WWW-Authenticate: Bearer``), a redirect to ``/login`` from pages.

Every response gets a strict Content-Security-Policy (scripts and styles only from ``/static``), no
framing, no sniffing, no caching of pages. The CSRF check itself is made by the routes that change
something (:func:`dashboard.routes.check_csrf`), with the nonce resolved here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard.access import CSRF_COOKIE, LOOPBACK_NAMES, SESSION_COOKIE, Access, Principal, new_nonce

#: Paths answered without a login.
PUBLIC_PATHS = ("/login", "/api/health")
PUBLIC_PREFIXES = ("/static/",)
#: Headers of every response.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
        " frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}
#: The local operator when no token is configured.
LOCAL = Principal("admin", None, "local")


class Guard:
    """Authentication, host check and security headers (see the module docstring)."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        path: str = scope["path"]
        if self.access.open and not _loopback(connection.headers.get("host", "")):
            await _secured(PlainTextResponse("Invalid host header", 400), scope, receive, send)
            return
        principal, nonce, bearer = self._identify(connection)
        fresh_nonce = None
        if nonce is None:
            nonce = connection.cookies.get(CSRF_COOKIE) or None
            if nonce is None:
                nonce = fresh_nonce = new_nonce()
        state = scope.setdefault("state", {})
        state.update(principal=principal, csrf_nonce=nonce, bearer=bearer)
        if principal is None and not _public(path):
            await _secured(_unauthenticated(connection), scope, receive, send)
            return
        secure = scope.get("scheme") == "https"

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                _add_security_headers(headers, static=path.startswith(PUBLIC_PREFIXES))
                if fresh_nonce is not None:
                    cookie = f"{CSRF_COOKIE}={fresh_nonce}; Path=/; HttpOnly; SameSite=Strict"
                    headers.append((b"set-cookie", (cookie + ("; Secure" if secure else "")).encode()))
            await send(message)

        await self.app(scope, receive, send_secured)

    def _identify(self, connection: HTTPConnection) -> tuple[Principal | None, str | None, bool]:
        """(operator, the session's CSRF nonce, whether a bearer token authenticated the request)."""
        if self.access.open:
            return LOCAL, None, False
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            grant = self.access.match(token.strip())
            if grant is None:
                return None, None, False
            name = connection.headers.get("x-agentq-operator", "")
            return self.access.principal_for(grant, name), None, True
        cookie = connection.cookies.get(SESSION_COOKIE)
        if cookie:
            session = self.access.read_session(cookie)
            if session is not None:
                return session[0], session[1], False
        return None, None, False


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    return name in LOOPBACK_NAMES


def _unauthenticated(connection: HTTPConnection) -> Response:
    if connection.url.path.startswith("/api/"):
        return JSONResponse(
            {"error": "authentication required: send Authorization: Bearer <token>", "status": 401},
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="agentq"'},
        )
    target = connection.url.path + (f"?{connection.url.query}" if connection.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _add_security_headers(headers: list[Any], *, static: bool) -> None:
    present = {name.lower() for name, _ in headers}
    for name, value in SECURITY_HEADERS.items():
        if name.encode() not in present:
            headers.append((name.encode(), value.encode()))
    if not static and b"cache-control" not in present:
        headers.append((b"cache-control", b"no-store"))


async def _secured(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    async def send_secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            _add_security_headers(message.setdefault("headers", []), static=False)
        await send(message)

    await response(scope, receive, send_secured)
