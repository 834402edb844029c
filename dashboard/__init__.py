"""The operator dashboard: ``agentq dashboard`` serves it (docs/architecture.md, *Dashboard*).

:func:`dashboard.app.create_app` builds the ASGI app from the queue facade and the access rules;
:func:`dashboard.server.serve` runs it with uvicorn. Importing this package connects to nothing.
"""

from __future__ import annotations
