"""Objects named in settings by dotted path (``AGENTQ_MIDDLEWARE``, ``AGENTQ_TOOLS``)."""

from __future__ import annotations

import importlib

from config.errors import ConfigError

__all__ = ["import_object"]


def import_object(path: str, setting: str) -> object:
    """The object at ``package.module:name`` (or ``package.module.name``).

    Raises:
        ConfigError: The path cannot be imported, naming ``setting`` and the path.
    """
    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{setting}={path!r} cannot be imported: {exc}") from exc
