"""``agentq dashboard``: serve the dashboard with uvicorn, refusing a non-loopback bind without a token."""

from __future__ import annotations

import logging

from config.errors import ConfigError

logger = logging.getLogger("agentq.dashboard")

#: Where ``agentq dashboard`` listens unless told otherwise.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8600


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """Build the dashboard of this process's runtime and serve it until interrupted.

    Raises:
        ConfigError: ``host`` is not a loopback address and no dashboard token is configured, or the
            port is not a port number.
    """
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a port number (1-65535)")
    from actors import runtime  # declares the agent kinds, as a worker does: retries need their actors
    from dashboard.access import Access, check_bind, is_loopback
    from dashboard.app import from_runtime

    access = Access.from_settings(runtime.settings)
    check_bind(host, access)
    import uvicorn

    app = from_runtime(runtime)
    if access.open:
        logger.warning(
            "Dashboard on http://%s:%s with no token configured, so for this machine only"
            " (set AGENTQ_DASHBOARD_TOKEN to serve it further)",
            _url_host(host),
            port,
        )
    else:
        scope = "this machine only" if is_loopback(host) else "the network: use TLS in front of it"
        logger.info(
            "Dashboard on http://%s:%s (login with a token; reachable from %s)", _url_host(host), port, scope
        )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
