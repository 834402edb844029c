"""Model-call limits: requests and tokens per minute per model and per organization, shared by every
worker through Redis, shaped by the provider's own rate-limit headers (README, *Provider limits*).

The agent loop asks a :class:`CallLimiter` for a permit before each model call and settles it after;
:data:`NO_LIMITS` (the default) admits everything, :class:`RedisLimiter` enforces a :class:`LimitPolicy`.
"""

from __future__ import annotations

from orchestrator.limits.base import NO_LIMITS, CallLimiter, NoLimits, Permit, estimate_tokens
from orchestrator.limits.policy import Bucket, LimitPolicy, margin_ms
from orchestrator.limits.redis_limiter import BucketUsage, RedisLimiter

__all__ = [
    "NO_LIMITS",
    "Bucket",
    "BucketUsage",
    "CallLimiter",
    "LimitPolicy",
    "NoLimits",
    "Permit",
    "RedisLimiter",
    "estimate_tokens",
    "margin_ms",
]
