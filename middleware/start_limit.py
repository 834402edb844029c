"""A global rate limit on task starts, optionally per agent kind (docs/architecture.md, *Queue semantics*).

At most ``AGENTQ_RATE_LIMIT_MAX`` tasks start per ``AGENTQ_RATE_LIMIT_WINDOW_MS``
across all workers, counted in a sliding window (a Redis sorted set of start times,
checked and updated atomically by one script), so no window of that length ever holds
more starts than the limit — unlike a fixed window, which allows twice the limit
across a boundary. ``AGENTQ_RATE_LIMITS_JSON`` adds limits per agent kind; a start must
fit every limit that applies. A limited task is not failed and uses no attempt: its
message is put back with a delay until the window has room, and the task stays
``queued``. Runs before ``TaskLifecycle``, so nothing is claimed for a limited message;
and a message that took a slot but does not start (its organization at its concurrency
cap, its task no longer queued) gives the slot back, so a capped organization re-tried
every 0.5-1 s does not use up the others' starts.
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

#: How long a slot just taken stays "held": its message may still be put back (organization cap, task
#: not queued any more) and the slot given back. Usually a claim settles it within milliseconds.
HOLD_MS = 1000
#: While held slots fill a window, a refused message looks again after this long, not the whole window.
HELD_RETRY_MS = 100

# KEYS: the held set, then one sorted set per limit. ARGV: member, hold_ms, held_retry_ms, then (max,
# window_ms) per limit key. Time is Redis's own (one clock for every worker machine). Returns {0, now_ms}
# when the start is admitted (recorded in every set, and held), else {ms to wait, now_ms}: until the
# fullest window has room, or held_retry_ms if some slot is held (it may be given back any moment).
_ADMIT = """
local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local held, hold, retry = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call("zremrangebyscore", held, "-inf", now - hold)
local wait = 0
for i = 2, #KEYS do
    local key, max, window = KEYS[i], tonumber(ARGV[2 * i]), tonumber(ARGV[1 + 2 * i])
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
    if wait > retry and redis.call("zcard", held) > 0 then
        wait = retry
    end
    return {wait, now}
end
for i = 2, #KEYS do
    redis.call("zadd", KEYS[i], now, ARGV[1])
    redis.call("pexpire", KEYS[i], tonumber(ARGV[1 + 2 * i]))
end
redis.call("zadd", held, now, ARGV[1])
redis.call("pexpire", held, hold)
return {0, now}
"""

# KEYS: the held set and the limit sets a slot was taken in. ARGV: the slot's member. Gives it back.
_REFUND = """
for _, key in ipairs(KEYS) do
    redis.call("zrem", key, ARGV[1])
end
return 0
"""


@dataclass(frozen=True)
class Slot:
    """A start slot taken for one message: its member in the limit sets ``keys``."""

    member: str
    keys: tuple[str, ...]


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
    """Admits agent task starts within the global and per-kind limits; puts the others back for later.

    A message that takes a slot and is then skipped before it starts — its organization at its
    concurrency cap, its task not queued any more, a duplicate, a claim that did not happen — gives
    the slot back (``after_skip_message``), so only real starts count. The pause is checked before
    the limit, so a paused message never takes one.
    """

    def __init__(self, *, limit: Limit | None, per_kind: Mapping[str, Limit] | None = None) -> None:
        self.limit = limit
        self.per_kind = dict(per_kind or {})
        self._scripts: dict[tuple[int, str], Any] = {}
        self._slots: dict[str, Slot] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        kind = agent_kind(broker, message)
        if kind is None or not isinstance(broker, RedisBroker):
            return
        limits = [(f"{broker.namespace}:starts", self.limit)] if self.limit else []
        if kind in self.per_kind:
            limits.append((f"{broker.namespace}:starts.{kind}", self.per_kind[kind]))
        if not limits:
            return
        slot = Slot(uuid.uuid4().hex, tuple(key for key, _ in limits))
        wait_ms, admitted_at_ms = self._admit(broker, slot, [limit for _, limit in limits])
        if not wait_ms:
            # The claim records this instant as ``started_at``, so the limit holds on the stored starts too.
            message.options[ADMITTED_AT_OPTION] = admitted_at_ms
            self._slots[message.message_id] = slot
            return
        delay = wait_ms + random.randint(1, 50)
        logger.debug("Rate limit: message %s waits %sms", message.message_id, delay)
        put_back(broker, message, delay_ms=delay)
        raise SkipMessage("rate limited")

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        """The message did not start after all: give its slot back."""
        slot = self._slots.pop(message.message_id, None)
        if slot is not None and isinstance(broker, RedisBroker):
            self._script(broker, _REFUND)(keys=[_held_key(broker), *slot.keys], args=[slot.member])
            logger.debug("Rate limit: message %s skipped; its start slot is given back", message.message_id)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._slots.pop(message.message_id, None)

    def _admit(self, broker: RedisBroker, slot: Slot, limits: list[Limit]) -> tuple[int, int]:
        args: list[Any] = [slot.member, HOLD_MS, HELD_RETRY_MS]
        for limit in limits:
            args += [limit.max, limit.window_ms]
        wait, now = self._script(broker, _ADMIT)(keys=[_held_key(broker), *slot.keys], args=args)
        return int(wait), int(now)

    def _script(self, broker: RedisBroker, source: str) -> Any:
        script = self._scripts.get((id(broker), source))
        if script is None:
            script = self._scripts[(id(broker), source)] = broker.client.register_script(source)
        return script


def _held_key(broker: RedisBroker) -> str:
    """The sorted set of slots taken in the last :data:`HOLD_MS` (not one a kind's limit could be named)."""
    return f"{broker.namespace}:start-holds"
