"""Model-call limits shared by every worker, in Redis (README, *Provider limits*).

:class:`RedisLimiter` counts each call in its buckets (:mod:`orchestrator.limits.policy`) with one
atomic script before the call and one after (:mod:`orchestrator.limits.scripts`):

* **Reserve**: one request and the call's estimated tokens
  (:func:`~orchestrator.limits.base.estimate_tokens`) in every bucket of the call. The call goes now
  if its slot fits every bucket for as long as it counts (slots booked for later included), so tokens
  a settled call gave back are used at once. Otherwise it queues behind the slots already booked, at
  the earliest time it fits; if that is within ``max_wait_ms`` (``AGENTQ_LIMIT_MAX_WAIT_MS``, default
  2 s; at most half the run's time left) the worker sleeps until then and calls. A call that waits
  only for calls still in flight (counted at their estimates) looks again every :data:`RECHECK_MS`
  within that wait, since they may settle for less. Otherwise a slot is booked for the task in the
  bucket that is full and :class:`~orchestrator.errors.LimitPostponed` postpones the task until the
  slot: its attempt is kept, and when it comes back (within the margin,
  :func:`~orchestrator.limits.policy.margin_ms`) its call takes the booked slot, so a long queue of
  waiting tasks wakes one slot at a time instead of all at once.
* **Settle**: the call's tokens become what the provider reported (input + output), returning or
  charging the difference; a failed call keeps its estimate. The provider's word wins: a 429 pauses
  the model's bucket for its Retry-After (every worker waits), and ``x-ratelimit-remaining-*`` /
  ``x-ratelimit-reset-*`` (Anthropic ``anthropic-ratelimit-*``) cap what the bucket admits until the reset.

**Redis unavailable**: reserving fails safe: the task is postponed by :data:`UNAVAILABLE_DELAY_MS`
(+ up to 1 s) with cause ``limiter_unavailable`` and a warning is logged. The call is never made
unlimited, and the attempt is not used; these postponements count toward ``AGENTQ_MAX_POSTPONES``,
so an outage that outlasts them ends in ordinary retries. Settling fails open: the warning is
logged, the run goes on, and the call's slot counts with its estimate until it stops counting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from orchestrator.errors import LimitPostponed, ProviderRateLimited
from orchestrator.limits.base import Permit, estimate_tokens
from orchestrator.limits.policy import MODEL_CACHE_SIZE, Bucket, LimitPolicy, margin_ms
from orchestrator.limits.scripts import RESERVE, SETTLE, USAGE
from orchestrator.messages import ModelRequest, ModelResponse, RateLimitReport

if TYPE_CHECKING:
    from orchestrator.agent import TaskInput

__all__ = ["DEFAULT_PREFIX", "UNAVAILABLE_DELAY_MS", "BucketUsage", "RedisLimiter"]

logger = logging.getLogger("orchestrator.limits")

#: Prefix of every key of the limiter (the broker's namespace is ``agentq``).
DEFAULT_PREFIX = "agentq:limits:"
#: How long a task waits when Redis does not answer the limiter (plus up to 1 s of jitter).
UNAVAILABLE_DELAY_MS = 5000
#: While a call waits only for unsettled calls' estimates, how often it looks again (within its short wait).
RECHECK_MS = 250
#: Buckets used within this long are listed by ``agentq limits`` and the metrics.
RECENT_MS = 3_600_000
#: The script's cause codes, by bucket kind: requests, tokens, provider.
_CAUSES = {"model": {1: "rpm", 2: "tpm", 3: "provider"}, "org": {1: "org_rpm", 2: "org_tpm", 3: "provider"}}
_WHAT = {1: "request limit", 2: "token limit", 3: "provider's rate limit"}


@dataclass(frozen=True)
class BucketUsage:
    """A bucket's use now (``agentq limits``, the metrics).

    Attributes:
        name: ``provider:model`` or ``org:<id>``.
        kind: ``model`` or ``org``.
        rpm: Configured requests per minute, or None.
        tpm: Configured tokens per minute, or None.
        window_s: The window the limits are counted over.
        requests_capacity: Requests allowed per window (0: no limit).
        tokens_capacity: Tokens allowed per window (0: no limit).
        requests_used: Requests counting in the window now, in flight included.
        tokens_used: Tokens counting in the window now, in flight included (estimates until settled).
        in_flight: Calls admitted and not settled.
        waiting: Slots booked ahead for postponed tasks (or tasks waiting a moment in a worker).
        paused_ms: How long the provider paused the bucket for, from now (0: not paused).
        provider_requests_left: Requests the provider said it still accepts, or None.
        provider_requests_reset_ms: Until when that holds, from now.
        provider_tokens_left: Tokens the provider said it still accepts, or None.
        provider_tokens_reset_ms: Until when that holds, from now.
    """

    name: str
    kind: str
    rpm: int | None
    tpm: int | None
    window_s: int
    requests_capacity: int
    tokens_capacity: int
    requests_used: int
    tokens_used: int
    in_flight: int
    waiting: int
    paused_ms: int
    provider_requests_left: int | None
    provider_requests_reset_ms: int
    provider_tokens_left: int | None
    provider_tokens_reset_ms: int


class _RedisPermit:
    """One reserved call; :meth:`settle` records how it ended."""

    __slots__ = ("buckets", "holder", "limiter")

    def __init__(self, limiter: RedisLimiter, buckets: Sequence[Bucket], holder: str) -> None:
        self.limiter = limiter
        self.buckets = buckets
        self.holder = holder

    def settle(self, response: ModelResponse | None = None, error: BaseException | None = None) -> None:
        """Charge the reported usage, apply the provider's headers; log and go on if Redis fails."""
        self.limiter._settle(self, response, error)


class RedisLimiter:
    """Model-call limits in Redis, shared by every worker; see the module docstring.

    Args:
        client: The Redis client (the broker's).
        policy: The configured limits.
        max_wait_ms: Longest a call waits in the worker before its task is postponed instead.
        prefix: Prefix of every key.
        sleep: Sleeps a number of seconds (tests pass a fake).
    """

    def __init__(
        self,
        client: redis.Redis,
        policy: LimitPolicy,
        *,
        max_wait_ms: int = 2000,
        prefix: str = DEFAULT_PREFIX,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Create the limiter; nothing connects until the first call."""
        self.client = client
        self.policy = policy
        self.max_wait_ms = max_wait_ms
        self.prefix = prefix
        self.sleep = sleep
        self._reserve = client.register_script(RESERVE)
        self._settle_script = client.register_script(SETTLE)
        self._usage = client.register_script(USAGE)
        self._keys: dict[str, list[str]] = {}

    # -- keys ------------------------------------------------------------------------------------

    @property
    def registry_key(self) -> str:
        """The sorted set of bucket names, scored by last use (ms)."""
        return f"{self.prefix}buckets"

    def keys(self, bucket: Bucket) -> list[str]:
        """The three keys of ``bucket``: state, log, slots (:mod:`orchestrator.limits.scripts`)."""
        keys = self._keys.get(bucket.name)
        if keys is None:
            base = f"{self.prefix}{bucket.name}:"
            keys = self._keys[bucket.name] = [base + "s", base + "l", base + "f"]
            if len(self._keys) > MODEL_CACHE_SIZE:
                self._keys.clear()
        return keys

    # -- the call path ---------------------------------------------------------------------------

    def acquire(self, provider: str, request: ModelRequest, task: TaskInput) -> Permit:
        """Reserve the call in its buckets, waiting if the wait is short; see the module docstring.

        Raises:
            LimitPostponed: The call fits only later than the worker waits, or Redis did not answer.
        """
        buckets = self.policy.buckets(provider, request.model, task.organization_id)
        estimate = estimate_tokens(request)
        max_wait = self.max_wait_ms
        if request.timeout_s is not None:
            max_wait = max(0, min(max_wait, int(request.timeout_s * 500)))
        keys: list[str] = [self.registry_key]
        for bucket in buckets:
            keys += self.keys(bucket)
        per_bucket: list[Any] = []
        for bucket in buckets:
            per_bucket += self._bucket_args(bucket, estimate)
        waited = 0
        while True:
            left = max_wait - waited
            args = [task.id, left, int(left >= RECHECK_MS), len(buckets), *per_bucket]
            try:
                now, start, status, index, cause = self._reserve(keys=keys, args=args)
            except redis.RedisError as exc:
                raise self._unavailable(buckets[0], exc) from exc
            if status != 3:
                break
            self.sleep(RECHECK_MS / 1000)  # unsettled calls' estimates may come back: look again
            waited += RECHECK_MS
        if status == 0:
            if start > now:
                self.sleep((start - now) / 1000)
            return _RedisPermit(self, buckets, task.id)
        raise self._postponed(buckets[int(index) - 1], int(now), int(start), int(status), int(cause))

    @staticmethod
    def _bucket_args(bucket: Bucket, estimate: int) -> list[Any]:
        limit = bucket.limit
        requests = limit.requests_per_window if limit is not None else 0
        tokens = limit.tokens_per_window if limit is not None else 0
        window = bucket.window_ms
        # A call larger than a whole window's tokens waits for an empty bucket rather than forever.
        return [bucket.name, requests, tokens, window, margin_ms(window), min(estimate, tokens or estimate)]

    @staticmethod
    def _postponed(bucket: Bucket, now: int, start: int, status: int, cause: int) -> LimitPostponed:
        booked = status == 1
        wait_ms = max(start - now, 1)
        limit = bucket.limit
        detail = ""
        if limit is not None and cause in (1, 2):
            per = f" per {limit.window_s} s"
            detail = f" ({limit.requests_per_window if cause == 1 else limit.tokens_per_window}{per})"
        then = "the call's slot is booked" if booked else "calls may resume"
        what = _WHAT.get(cause, "limit")
        message = f"{bucket.name}: {what} reached{detail}; {then} in {wait_ms / 1000:.1f} s"
        label = _CAUSES[bucket.kind].get(cause, "rpm")
        return LimitPostponed(message, bucket=bucket.name, postpone_ms=wait_ms, cause=label, booked=booked)

    @staticmethod
    def _unavailable(bucket: Bucket, exc: redis.RedisError) -> LimitPostponed:
        delay = UNAVAILABLE_DELAY_MS + random.randint(0, 1000)
        logger.warning("Provider limits unavailable (Redis: %s); postponing the call for %sms", exc, delay)
        return LimitPostponed(
            f"{bucket.name}: the limiter's Redis did not answer ({exc}); the call waits {delay / 1000:.1f} s",
            bucket=bucket.name,
            postpone_ms=delay,
            cause="limiter_unavailable",
            booked=False,
        )

    def _settle(
        self, permit: _RedisPermit, response: ModelResponse | None, error: BaseException | None
    ) -> None:
        report: RateLimitReport | None = response.rate_limits if response is not None else None
        if error is not None:
            report = getattr(error, "rate_limits", None)
        pause = (error.postpone_ms or 0) if isinstance(error, ProviderRateLimited) else 0
        if report is None and not pause and all(bucket.limit is None for bucket in permit.buckets):
            return  # nothing to count and nothing the provider said: no round trip
        used = -1 if response is None else response.usage.input_tokens + response.usage.output_tokens
        report = report or RateLimitReport()
        keys: list[str] = []
        args: list[Any] = [permit.holder, used, pause, *_report_args(report), len(permit.buckets)]
        for bucket in permit.buckets:
            keys += self.keys(bucket)
            args += [bucket.window_ms, margin_ms(bucket.window_ms), int(bucket.kind == "model")]
        try:
            self._settle_script(keys=keys, args=args)
        except redis.RedisError as exc:
            logger.warning(
                "Could not settle a model call in %s (Redis: %s); it counts with its estimate"
                " until its window ends",
                ", ".join(bucket.name for bucket in permit.buckets),
                exc,
            )

    # -- reports ---------------------------------------------------------------------------------

    def recent_buckets(self, *, within_ms: int = RECENT_MS) -> list[str]:
        """Names of the buckets used in the last ``within_ms``, sorted."""
        now_s, now_us = self.client.time()
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        names = self.client.zrangebyscore(self.registry_key, now_ms - within_ms, "+inf")
        return sorted(name.decode() if isinstance(name, bytes) else str(name) for name in names)

    def usage(self, names: Iterable[str] | None = None) -> list[BucketUsage]:
        """Each bucket's use now (default: the recently used ones)."""
        buckets = [
            self.policy.bucket_named(name) for name in (self.recent_buckets() if names is None else names)
        ]
        if not buckets:
            return []
        keys: list[str] = []
        args: list[Any] = [len(buckets)]
        for bucket in buckets:
            keys += self.keys(bucket)
            args += [bucket.window_ms, margin_ms(bucket.window_ms)]
        rows = self._usage(keys=keys, args=args)
        return [
            _usage_of(bucket, [int(value) for value in row])
            for bucket, row in zip(buckets, rows, strict=True)
        ]


def _report_args(report: RateLimitReport) -> list[int]:
    def pair(left: int | None, reset: int | None) -> list[int]:
        return [-1, -1] if left is None or reset is None else [left, reset]

    return [
        *pair(report.requests_remaining, report.requests_reset_ms),
        *pair(report.tokens_remaining, report.tokens_reset_ms),
    ]


def _usage_of(bucket: Bucket, row: list[int]) -> BucketUsage:
    requests, tokens, in_flight, waiting, paused, req_left, req_reset, tok_left, tok_reset = row
    limit = bucket.limit
    return BucketUsage(
        name=bucket.name,
        kind=bucket.kind,
        rpm=limit.rpm if limit is not None else None,
        tpm=limit.tpm if limit is not None else None,
        window_s=bucket.window_ms // 1000,
        requests_capacity=limit.requests_per_window if limit is not None else 0,
        tokens_capacity=limit.tokens_per_window if limit is not None else 0,
        requests_used=requests,
        tokens_used=tokens,
        in_flight=in_flight,
        waiting=waiting,
        paused_ms=paused,
        provider_requests_left=None if req_left < 0 else req_left,
        provider_requests_reset_ms=req_reset,
        provider_tokens_left=None if tok_left < 0 else tok_left,
        provider_tokens_reset_ms=tok_reset,
    )
