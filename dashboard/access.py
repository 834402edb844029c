"""Who may use the dashboard, and how a request proves it (docs/architecture.md, *Dashboard*).

* **Tokens**: ``AGENTQ_DASHBOARD_TOKEN`` (full access), ``AGENTQ_DASHBOARD_READONLY_TOKEN`` (no actions) and
  ``AGENTQ_DASHBOARD_ORG_TOKENS_JSON`` (read-only, one organization's tasks). A script sends
  ``Authorization: Bearer <token>``; a browser logs in once and gets a signed, HttpOnly, SameSite=Strict
  session cookie. Tokens are compared in constant time, every configured one each time.
* **No token configured**: everyone who reaches the server is a full-access operator, so the server only
  binds the loopback interface (:func:`check_bind`) and only answers requests addressed to it by a
  loopback name (a DNS-rebinding page cannot reach it).
* **CSRF**: a request authenticated by a cookie (or by nothing, without tokens) must carry the form field
  ``csrf_token`` or the header ``X-CSRF-Token``: an HMAC of a random nonce kept in an HttpOnly cookie.
  A request with a bearer token needs none (a browser never adds that header by itself).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from config.errors import ConfigError
from config.settings import Settings
from taskstore import normalize_id

Role = Literal["admin", "viewer"]

#: The session cookie (a signed :class:`Principal`) and the CSRF nonce cookie.
SESSION_COOKIE = "agentq_session"
CSRF_COOKIE = "agentq_csrf"
#: How long a browser session lasts.
SESSION_S = 12 * 3600
#: Longest operator name kept (it is written to the audit log).
MAX_NAME_CHARS = 60
#: Host names a request must use when no token is configured.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Principal:
    """The operator behind a request."""

    role: Role
    #: The only organization this operator may see; ``None``: every organization.
    organization_id: str | None
    #: How the operator is named in the audit log.
    name: str
    #: Fingerprint of the token that authenticated it (``""`` without tokens): a session outlives no rotation.
    token_id: str = ""

    @property
    def can_act(self) -> bool:
        """Whether this operator may change anything (retry, cancel, pause, schedules)."""
        return self.role == "admin" and self.organization_id is None

    @property
    def sees_everything(self) -> bool:
        """Whether global views (workers, every organization) are open to this operator."""
        return self.organization_id is None


@dataclass(frozen=True)
class Grant:
    """What one configured token grants."""

    token: str
    role: Role
    organization_id: str | None

    @property
    def token_id(self) -> str:
        return hashlib.sha256(self.token.encode()).hexdigest()[:16]


class Access:
    """The dashboard's tokens, its signing key, and the checks built on them."""

    def __init__(self, grants: list[Grant], *, signing_key: bytes | None = None) -> None:
        self.grants = grants
        if signing_key is None:
            if grants:  # every process with the same tokens accepts the same sessions
                material = "\0".join(sorted(grant.token for grant in grants)).encode()
                signing_key = hmac.new(material, b"agentq-dashboard-session", hashlib.sha256).digest()
            else:
                signing_key = secrets.token_bytes(32)
        self._key = signing_key

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        """The grants of ``settings``' dashboard tokens (:class:`ConfigError` for a bad organization id)."""
        grants = []
        if settings.dashboard_token is not None:
            grants.append(Grant(settings.dashboard_token.get_secret_value(), "admin", None))
        if settings.dashboard_readonly_token is not None:
            grants.append(Grant(settings.dashboard_readonly_token.get_secret_value(), "viewer", None))
        for organization, token in settings.dashboard_org_tokens.items():
            try:
                organization_id = normalize_id(organization, "organization id")
            except ValueError as exc:
                raise ConfigError(f"AGENTQ_DASHBOARD_ORG_TOKENS_JSON: {exc}") from None
            grants.append(Grant(str(token), "viewer", organization_id))
        tokens = [grant.token for grant in grants]
        if len(set(tokens)) != len(tokens):
            raise ConfigError("the dashboard tokens must differ from one another")
        return cls(grants)

    @property
    def open(self) -> bool:
        """No token configured: every local request is a full-access operator."""
        return not self.grants

    def match(self, token: str) -> Grant | None:
        """The grant of ``token``, comparing it with every configured token in constant time."""
        found = None
        for grant in self.grants:
            if hmac.compare_digest(grant.token.encode(), token.encode()):
                found = grant
        return found

    def principal_for(self, grant: Grant, name: str) -> Principal:
        label = clean_name(name) or f"{grant.role} token"
        return Principal(grant.role, grant.organization_id, label, grant.token_id)

    # --- the session cookie -------------------------------------------------

    def session_value(self, principal: Principal, nonce: str, *, now: float | None = None) -> str:
        """The signed cookie value of ``principal``'s session (expires after :data:`SESSION_S`)."""
        body = {
            "r": principal.role,
            "o": principal.organization_id,
            "n": principal.name,
            "t": principal.token_id,
            "c": nonce,
            "e": int((time.time() if now is None else now) + SESSION_S),
        }
        payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
        return f"{payload}.{self._sign(payload)}"

    def read_session(self, value: str, *, now: float | None = None) -> tuple[Principal, str] | None:
        """The principal and CSRF nonce of a session cookie, or ``None`` if it is forged, expired, or its
        token is no longer configured."""
        payload, _, signature = value.partition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(payload.encode()))
            principal = Principal(body["r"], body["o"], str(body["n"]), str(body["t"]))
            expires, nonce = int(body["e"]), str(body["c"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires < (time.time() if now is None else now):
            return None
        if not any(grant.token_id == principal.token_id for grant in self.grants):
            return None
        return principal, nonce

    # --- CSRF ---------------------------------------------------------------

    def csrf_token(self, nonce: str) -> str:
        """The token forms and scripts echo back for ``nonce``."""
        return self._sign(f"csrf:{nonce}")

    def csrf_valid(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(token, self.csrf_token(nonce))

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def clean_name(name: str, limit: int = MAX_NAME_CHARS) -> str:
    """``name`` fit for one log line: printable, no quotes, backslashes or angle brackets, single spaces,
    at most ``limit`` characters."""
    kept = "".join(ch for ch in name if ch.isprintable() and ch not in "\"'\\<>")
    return " ".join(kept.split())[:limit]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, access: Access) -> None:
    """Refuse to serve on a non-loopback interface without a token.

    Raises:
        ConfigError: ``host`` is reachable from other machines and no ``AGENTQ_DASHBOARD_TOKEN`` (nor a
            read-only or organization token) is configured.
    """
    if access.open and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the dashboard on {host!r} without a token: anyone who reaches it could"
            " retry, cancel and pause tasks. Set AGENTQ_DASHBOARD_TOKEN (and AGENTQ_DASHBOARD_READONLY_TOKEN"
            " for read-only access), or bind 127.0.0.1"
        )
