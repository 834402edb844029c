"""The process-wide runtime that ``dramatiq actors``, ``periodiq actors`` and applications share.

Built from the environment when ``actors`` is first imported: the settings are
validated, and the store, broker and queue are constructed — none of them
connects until first used. The broker becomes Dramatiq's global broker so the
agent kinds in ``actors.kinds`` declare on it.
"""

from __future__ import annotations

import os
import sys
from functools import partial

import dramatiq

from actors.agent_actor import agent_actor
from actors.runtime import Runtime, build_runtime
from config.errors import ConfigError
from config.settings import load_settings

#: Commands that report a configuration error as one line instead of a traceback.
_COMMANDS = {"agentq", "dramatiq", "periodiq", "dramatiq-gevent"}


def _in_a_command() -> bool:
    """True inside ``agentq``, ``dramatiq`` or ``periodiq`` (including their worker processes)."""
    return os.path.basename(sys.argv[0]) in _COMMANDS or "dramatiq.cli" in sys.modules


def _load() -> Runtime:
    try:
        return build_runtime(load_settings())
    except ConfigError as exc:
        if _in_a_command():
            raise SystemExit(f"agentq: {exc}") from None
        raise


runtime = _load()
dramatiq.set_broker(runtime.broker)

#: ``@agent_kind(kind=...)``: ``agent_actor`` bound to this process's store, orchestrator and broker.
agent_kind = partial(
    agent_actor,
    store=runtime.store,
    orchestrator=runtime.orchestrator,
    broker=runtime.broker,
    budget=runtime.budget,
    step_ledger=runtime.settings.step_ledger,
)
