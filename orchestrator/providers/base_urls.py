"""Which base URLs an agent may point its provider at (and so send the platform's API key to).

An agent's ``base_url`` is allowed only when it matches one of the operator's prefixes
(``AGENTQ_ALLOWED_BASE_URLS``): the same scheme, host and port (the default port when none is
written), and a path equal to the prefix's path or below it (``/v1`` allows ``/v1`` and
``/v1/x``, not ``/v1x``). URLs that could be read two ways are never allowed: user info
(``http://allowed@evil.com``), a query or fragment, ``.``/``..`` path segments (also
percent-encoded), whitespace, control characters or backslashes, and schemes other than
``http``/``https``. No prefixes: no agent may override its provider's base URL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from config.errors import AgentQueueError

__all__ = ["BaseUrlPolicy", "InvalidBaseUrlPrefix"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidBaseUrlPrefix(AgentQueueError, ValueError):
    """A configured prefix is not an absolute ``http(s)://host[:port][/path]`` URL."""


@dataclass(frozen=True)
class _Url:
    """A base URL reduced to what is compared."""

    scheme: str
    host: str
    port: int
    path: str

    def within(self, prefix: _Url) -> bool:
        """Whether this URL is ``prefix`` or below it (same origin, path on a segment boundary)."""
        if (self.scheme, self.host, self.port) != (prefix.scheme, prefix.host, prefix.port):
            return False
        root = prefix.path.rstrip("/")
        return self.path.rstrip("/") == root or self.path.startswith(root + "/")


def _unsafe_character(url: str) -> bool:
    return any(char.isspace() or char == "\\" or ord(char) < 0x20 or ord(char) == 0x7F for char in url)


def _parse(url: str) -> _Url | None:
    """``url`` reduced for comparison, or None when it is not a plain absolute http(s) URL."""
    if _unsafe_character(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return None
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        return None
    return _Url(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], parts.path)


class BaseUrlPolicy:
    """The operator's allowed base URL prefixes.

    Args:
        prefixes: Allowed prefixes, e.g. ``("http://127.0.0.1:8000/v1",)``; empty allows none.

    Raises:
        InvalidBaseUrlPrefix: A prefix is not an absolute http(s) URL; names it.
    """

    def __init__(self, prefixes: Iterable[str] = ()) -> None:
        """Parse the prefixes; see the class docstring."""
        self.prefixes = tuple(prefixes)
        parsed: list[_Url] = []
        for prefix in self.prefixes:
            url = _parse(prefix)
            if url is None:
                raise InvalidBaseUrlPrefix(
                    f"base URL prefix {prefix!r} is not an absolute http(s)://host[:port][/path] URL"
                    " without user info, query or fragment"
                )
            parsed.append(url)
        self._allowed = tuple(parsed)

    def allows(self, url: str) -> bool:
        """Whether an agent may use ``url`` as its base URL."""
        candidate = _parse(url)
        return candidate is not None and any(candidate.within(prefix) for prefix in self._allowed)
