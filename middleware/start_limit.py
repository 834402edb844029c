"""A global rate limit on task starts, optionally per agent kind (DESIGN §7).

At most ``AGENTQ_RATE_LIMIT_MAX`` tasks start per ``AGENTQ_RATE_LIMIT_WINDOW_MS``
across all workers, counted in a sliding window (a Redis sorted set of start times,
checked and updated atomically by one script), so no window of that length ever holds
more starts than the limit — unlike a fixed window, which allows twice the limit
across a boundary. ``AGENTQ_RATE_LIMITS_JSON`` adds limits per agent kind; a start must
fit every limit that applies. A limited task is not failed and uses no attempt: its
message is put back with a delay until the window has room, and the task stays
``queued``. Runs before ``TaskLifecycle``, so nothing is claimed for a limited message.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import SkipMessage

from config.errors import ConfigError
from middleware.agent_messages import ADMITTED_AT_OPTION, agent_kind, put_back

logger = logging.getLogger("agentq.lifecycle")

# KEYS: one sorted set per limit. ARGV: member, then (max, window_ms) per key. Time is Redis's own
# (one clock for every worker machine). Returns {0, now_ms} when the start is admitted (recorded in
# every set), else {ms until the fullest window has room, now_ms}.
_ADMIT = """
local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
    local max, window = tonumber(ARGV[2 * i]), tonumber(ARGV[1 + 2 * i])
    redis.call("zremrangebyscore", key, "-inf", now - window)
    if redis.call("zcard", key) >= max then
        local oldest = redis.call("zrange", key, 0, 0, "WITHSCORES")
        local until_free = tonumber(oldest[2]) + window - now
        if until_free > wait then
            wait = until_free
        end
    end
end
if wait > 0 then
    return {wait, now}
end
for i, key in ipairs(KEYS) do
    redis.call("zadd", key, now, ARGV[1])
    redis.call("pexpire", key, tonumber(ARGV[1 + 2 * i]))
end
return {0, now}
"""


@dataclass(frozen=True)
class Limit:
    """At most ``max`` starts per ``window_ms``."""

    max: int
    window_ms: int


def parse_kind_limits(raw: Mapping[str, Any]) -> dict[str, Limit]:
    """Validate ``AGENTQ_RATE_LIMITS_JSON``: ``{"kind": {"max": 10, "window_ms": 2000}}``."""
    limits = {}
    for kind, spec in raw.items():
        if not isinstance(spec, Mapping) or set(spec) - {"max", "window_ms"}:
            raise ConfigError(
                f"AGENTQ_RATE_LIMITS_JSON entry {kind!r}: {spec!r} is not {{'max': n, 'window_ms': ms}}"
            )
        maximum, window = spec.get("max"), spec.get("window_ms", 60_000)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (maximum, window)):
            raise ConfigError(f"AGENTQ_RATE_LIMITS_JSON entry {kind!r}: max and window_ms must be integers")
        assert isinstance(maximum, int) and isinstance(window, int)
        if maximum < 0 or window < 1:
            raise ConfigError(f"AGENTQ_RATE_LIMITS_JSON entry {kind!r}: max must be >= 0 and window_ms >= 1")
        if maximum:
            limits[kind] = Limit(maximum, window)
    return limits


class StartRateLimit(dramatiq.Middleware):
    """Admits agent task starts within the global and per-kind limits; puts the others back for later."""

    def __init__(self, *, limit: Limit | None, per_kind: Mapping[str, Limit] | None = None) -> None:
        self.limit = limit
        self.per_kind = dict(per_kind or {})
        self._scripts: dict[int, Any] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        kind = agent_kind(broker, message)
        if kind is None or not isinstance(broker, RedisBroker):
            return
        limits = [(f"{broker.namespace}:starts", self.limit)] if self.limit else []
        if kind in self.per_kind:
            limits.append((f"{broker.namespace}:starts.{kind}", self.per_kind[kind]))
        if not limits:
            return
        wait_ms, admitted_at_ms = self._admit(broker, limits)
        if not wait_ms:
            # The claim records this instant as ``started_at``, so the limit holds on the stored starts too.
            message.options[ADMITTED_AT_OPTION] = admitted_at_ms
            return
        delay = wait_ms + random.randint(1, 50)
        logger.debug("Rate limit: message %s waits %sms", message.message_id, delay)
        put_back(broker, message, delay_ms=delay)
        raise SkipMessage("rate limited")

    def _admit(self, broker: RedisBroker, limits: list[tuple[str, Limit]]) -> tuple[int, int]:
        script = self._scripts.get(id(broker))
        if script is None:
            script = self._scripts[id(broker)] = broker.client.register_script(_ADMIT)
        args: list[Any] = [uuid.uuid4().hex]
        for _, limit in limits:
            args += [limit.max, limit.window_ms]
        wait, now = script(keys=[key for key, _ in limits], args=args)
        return int(wait), int(now)
