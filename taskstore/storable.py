"""Values every store can write: what Postgres refuses is removed or replaced, the same for all stores.

Model output and error texts may hold characters no Postgres ``text``/``jsonb`` accepts. Every
store passes the results, transcripts, error texts and stack traces it writes through these
functions, so a run ends with its data (slightly altered) instead of a write that always fails:

* NUL characters (``\\x00``) are removed;
* lone UTF-16 surrogates (``\\ud800``…``\\udfff``, which cannot be encoded as UTF-8) become U+FFFD;
* non-finite floats (NaN, ±Infinity) in JSON become ``null``.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeVar, overload

T = TypeVar("T")

_REFUSED = re.compile("[\x00\ud800-\udfff]")


def _replacement(match: re.Match[str]) -> str:
    return "" if match.group() == "\x00" else "\ufffd"


@overload
def storable_text(text: str) -> str: ...
@overload
def storable_text(text: None) -> None: ...
def storable_text(text: str | None) -> str | None:
    """``text`` without NUL characters and with lone surrogates replaced by U+FFFD."""
    if text is None or _REFUSED.search(text) is None:
        return text
    return _REFUSED.sub(_replacement, text)


def storable_json(value: T) -> T:
    """A copy of the JSON ``value`` with :func:`storable_text` applied to every string (keys too) and
    non-finite floats replaced by ``None``. Values other than dicts, lists, tuples, str and float are
    left as they are."""
    return _clean(value)  # type: ignore[no-any-return]


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
