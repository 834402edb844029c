"""Provider and organization rate limits as configured: ``AGENTQ_PROVIDER_LIMITS_JSON``,
``AGENTQ_ORG_LIMITS_JSON`` (README, *Provider limits*).

Each entry is ``{"rpm": n, "tpm": n, "window_s": s}``: requests and tokens per minute, at least one
of them, and optionally the sliding window (1-60 s, default 60) they are enforced over, scaled to
it (``rpm * window_s / 60`` requests per window). A shorter window spreads a minute's budget evenly,
as a provider does that enforces 60,000 RPM as 1,000 requests per second. Malformed JSON, an entry
that is not an object, an unknown key, a limit that is not a positive integer, or a window too short
to allow one request or token is refused with a message naming the entry and the key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from config.errors import short_repr

__all__ = [
    "DEFAULT_WINDOW_S",
    "RateLimit",
    "parse_limits_json",
    "parse_org_limits",
    "parse_provider_limits",
]

#: The window limits are counted over unless an entry says otherwise: a minute, as providers count.
DEFAULT_WINDOW_S = 60
#: The keys an entry may have.
KEYS = ("rpm", "tpm", "window_s")


@dataclass(frozen=True)
class RateLimit:
    """Requests and tokens per minute, enforced over a sliding window of ``window_s`` seconds.

    Attributes:
        rpm: Requests per minute, or None for no request limit.
        tpm: Tokens (input + output) per minute, or None for no token limit.
        window_s: The sliding window, 1-60 s; the limits are scaled to it.
    """

    rpm: int | None = None
    tpm: int | None = None
    window_s: int = DEFAULT_WINDOW_S

    @property
    def window_ms(self) -> int:
        """The window in milliseconds."""
        return self.window_s * 1000

    @property
    def requests_per_window(self) -> int:
        """Requests allowed in any one window (0: no request limit)."""
        return 0 if self.rpm is None else self.rpm * self.window_s // 60

    @property
    def tokens_per_window(self) -> int:
        """Tokens allowed in any one window (0: no token limit)."""
        return 0 if self.tpm is None else self.tpm * self.window_s // 60

    def with_default_tpm(self, tpm: int) -> RateLimit:
        """This limit, with ``tpm`` when it sets none (``tpm`` 0: unchanged)."""
        if self.tpm is not None or not tpm:
            return self
        return RateLimit(self.rpm, tpm, self.window_s)


def parse_limits_json(value: Any) -> dict[str, Any]:
    """``value`` (a JSON text or a mapping) as a dict, or a ValueError saying what is wrong with it."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, Mapping):
        raise ValueError('must be a JSON object such as {"openai:gpt-4o-mini": {"rpm": 500}}')
    return dict(value)


def _positive_int(entry: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"entry {short_repr(entry)}: {key} must be a positive integer, got {short_repr(value)}"
        )
    return value


def parse_limit(entry: str, spec: Any) -> RateLimit:
    """One entry's ``{"rpm", "tpm", "window_s"}`` object as a :class:`RateLimit`.

    Raises:
        ValueError: Naming the entry and the bad key or value.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"entry {short_repr(entry)}: {short_repr(spec)} is not an object"
            ' such as {"rpm": 500, "tpm": 200000}'
        )
    unknown = sorted(str(key) for key in spec if key not in KEYS)
    if unknown:
        raise ValueError(
            f"entry {short_repr(entry)}: unknown key {', '.join(map(short_repr, unknown))}"
            f" (known: {', '.join(KEYS)})"
        )
    if "rpm" not in spec and "tpm" not in spec:
        raise ValueError(f"entry {short_repr(entry)}: give rpm, tpm or both")
    rpm = _positive_int(entry, "rpm", spec["rpm"]) if "rpm" in spec else None
    tpm = _positive_int(entry, "tpm", spec["tpm"]) if "tpm" in spec else None
    window = _positive_int(entry, "window_s", spec.get("window_s", DEFAULT_WINDOW_S))
    if window > 60:
        raise ValueError(f"entry {short_repr(entry)}: window_s must be at most 60, got {window}")
    limit = RateLimit(rpm, tpm, window)
    for key, allowed in (("rpm", limit.requests_per_window), ("tpm", limit.tokens_per_window)):
        if spec.get(key) is not None and allowed < 1:
            raise ValueError(
                f"entry {short_repr(entry)}: {key} {spec[key]} over window_s {window} allows less than"
                f" one per window; raise {key} or window_s"
            )
    return limit


def _model_pattern(key: Any) -> str:
    """Check an ``AGENTQ_PROVIDER_LIMITS_JSON`` key: ``provider:model``, the model may end with ``*``."""
    text = key if isinstance(key, str) else ""
    provider, colon, model = text.partition(":")
    bad_provider = not provider or "*" in provider or provider != provider.strip()
    if not colon or bad_provider or not model or "*" in model[:-1] or model != model.strip():
        raise ValueError(
            f"key {short_repr(key)} is not 'provider:model' (e.g. 'openai:gpt-4o-mini', 'anthropic:*',"
            " 'openai:gpt-4o*': a model may end with '*')"
        )
    return text


def parse_provider_limits(value: Any) -> dict[str, RateLimit]:
    """``AGENTQ_PROVIDER_LIMITS_JSON``: ``{"provider:model": {"rpm", "tpm", "window_s"}}``.

    Raises:
        ValueError: Malformed JSON, a bad key (not ``provider:model``), or a bad entry.
    """
    raw = parse_limits_json(value)
    return {_model_pattern(key): parse_limit(key, spec) for key, spec in raw.items()}


def parse_org_limits(value: Any) -> dict[str, RateLimit]:
    """``AGENTQ_ORG_LIMITS_JSON``: ``{"<organization uuid>": {"rpm", "tpm", "window_s"}}``; keys normalised.

    Raises:
        ValueError: Malformed JSON, a key that is not a UUID (or given twice), or a bad entry.
    """
    raw = parse_limits_json(value)
    limits: dict[str, RateLimit] = {}
    for key, spec in raw.items():
        try:
            organization = str(uuid.UUID(str(key)))
        except ValueError:
            raise ValueError(f"key {short_repr(key)} is not an organization id (a UUID)") from None
        if organization in limits:
            raise ValueError(f"organization {organization} is given twice")
        limits[organization] = parse_limit(key, spec)
    return limits
