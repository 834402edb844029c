"""Priority lanes and fair ordering on Redis, with a blocking fetch (a Dramatiq Redis broker subclass).

Dramatiq's Redis broker keeps one list per queue and its consumers poll it with a
backoff of up to a second. This broker keeps, per queue and per priority 0-10, a
ring of organizations, each with its own list of message ids:

* **Priority, strictly**: a fetch takes from the highest non-empty priority. Messages
  without a lane (ordinary actors, and messages that Dramatiq's maintenance or shutdown
  put back on the plain list) rank as priority 5.
* **Fairness**: within one priority, organizations take turns (round robin), so a
  burst of thousands of tasks from one tenant delays another tenant's task by at most
  one message per tenant ahead of it, not by the whole burst.
* **Blocking fetch**: every enqueue also pushes a token on the queue's "bell" list; an
  idle consumer waits on it with ``BLPOP`` (up to a second, so heartbeats keep flowing),
  so a new message starts within milliseconds and an idle worker costs almost nothing.
* **Pause**: :meth:`LaneBroker.pause` / :meth:`~LaneBroker.resume` / :meth:`~LaneBroker.paused` own
  the switch, one key (:data:`PAUSED_KEY` under the namespace). While it exists, fetches return
  nothing (heartbeats continue, so no worker is ever taken for dead and nothing is requeued twice);
  :class:`middleware.pause.Pause` holds back what a worker had already prefetched.
* **Batches**: :meth:`LaneBroker.enqueue_many` sends many messages in one ``MULTI/EXEC``
  round trip (``AgentTaskQueue.add_tasks``), so all of them land or none does.
* **Grouped acks**: acks that worker threads make while another is in flight are written
  together, one round trip for all (:class:`taskstore.group_commit.GroupCommit`); each
  does what Dramatiq's ``ack`` does.

Payloads, ack sets, heartbeats, delayed queues (``.DQ``) and dead letters keep
Dramatiq's own layout (and, but for acks, its scripts), so nacks, maintenance and the
delayed-message consumer work unchanged.

Guarantee: a message of priority p is fetched before any message of a lower priority
that is still in Redis. Messages already prefetched by a worker (at most
``dramatiq_queue_prefetch``, default 2 per thread) are not reordered. Starvation: a
lower priority waits as long as higher priorities have messages in Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import uuid4

import dramatiq
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import MiddlewareError

from middleware.agent_messages import LANE_OPTION, ORG_OPTION
from middleware.batches import enqueue_batch
from middleware.pause import PausableBroker
from taskstore.group_commit import GroupCommit

#: Organization of messages that carry none.
NO_ORG = "-"
#: Tokens kept on a bell list; more would only wake consumers for nothing.
BELL_MAX = 1000
#: Longest an idle consumer blocks before fetching again (heartbeats, pause changes).
IDLE_BLOCK_S = 1.0
#: Stands for Dramatiq's plain list (messages without a lane) in :data:`FETCH_ORDER`.
PLAIN_LIST = -1
#: Fetch order, written into the fetch script: priority 10 first; the plain list ranks as priority 5.
FETCH_ORDER = (10, 9, 8, 7, 6, 5, PLAIN_LIST, 4, 3, 2, 1, 0)
#: Key (under the broker's namespace) whose existence pauses every worker's fetch.
PAUSED_KEY = "paused"

_ENQUEUE = """
local base, id, data, lane, org, bell_max = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
redis.call("hset", base .. ".msgs", id, data)
if redis.call("rpush", base .. ".p" .. lane .. ".o." .. org, id) == 1 then
    redis.call("rpush", base .. ".p" .. lane .. ".orgs", org)
end
redis.call("rpush", base .. ".bell", "1")
redis.call("ltrim", base .. ".bell", -bell_max, -1)
return 1
"""

# KEYS[1]: the paused key. ``{ORDER}`` is replaced by FETCH_ORDER below (a negative lane is the plain
# list): written into the script once, not sent with every fetch.
_FETCH_SOURCE = """
local ns, queue, worker, now, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
redis.call("zadd", ns .. ":__heartbeats__", now, worker)
if redis.call("exists", KEYS[1]) == 1 then
    return {}
end
local base = ns .. ":" .. queue
local acks = ns .. ":__acks__." .. worker .. "." .. queue
local order = {ORDER}
local ids = {}
while #ids < count do
    local got = false
    for _, lane in ipairs(order) do
        if lane < 0 then
            got = redis.call("lpop", base)
        else
            local ring = base .. ".p" .. lane .. ".orgs"
            local org = redis.call("lpop", ring)
            while org do
                local list = base .. ".p" .. lane .. ".o." .. org
                got = redis.call("lpop", list)
                if redis.call("llen", list) > 0 then
                    redis.call("rpush", ring, org)
                end
                if got then
                    break
                end
                org = redis.call("lpop", ring)
            end
        end
        if got then
            break
        end
    end
    if not got then
        break
    end
    ids[#ids + 1] = got
    redis.call("sadd", acks, got)
end
if #ids == 0 then
    return {}
end
return redis.call("hmget", base .. ".msgs", unpack(ids))
"""
_FETCH = _FETCH_SOURCE.replace("{ORDER}", "{" + ", ".join(map(str, FETCH_ORDER)) + "}")

_REQUEUE = """
local ns, queue, worker = ARGV[1], ARGV[2], ARGV[3]
local base = ns .. ":" .. queue
local acks = ns .. ":__acks__." .. worker .. "." .. queue
for i = 4, #ARGV, 3 do
    local id, lane, org = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if redis.call("srem", acks, id) > 0 and redis.call("hexists", base .. ".msgs", id) == 1 then
        if redis.call("lpush", base .. ".p" .. lane .. ".o." .. org, id) == 1 then
            redis.call("rpush", base .. ".p" .. lane .. ".orgs", org)
        end
        redis.call("rpush", base .. ".bell", "1")
    end
end
return 1
"""


_ACK = """
local ns, worker, now = ARGV[1], ARGV[2], ARGV[3]
redis.call("zadd", ns .. ":__heartbeats__", now, worker)
for i = 4, #ARGV, 2 do
    local queue, id = ARGV[i], ARGV[i + 1]
    if redis.call("srem", ns .. ":__acks__." .. worker .. "." .. queue, id) > 0 then
        redis.call("hdel", ns .. ":" .. queue .. ".msgs", id)
    end
end
return 1
"""


def lane_of(message: dramatiq.Message[Any] | MessageProxy) -> tuple[int, str] | None:
    """The (priority, organization) lane a message waits in, or ``None`` for Dramatiq's plain list."""
    lane = message.options.get(LANE_OPTION)
    if isinstance(lane, bool) or not isinstance(lane, int) or not 0 <= lane <= 10:
        return None
    org = message.options.get(ORG_OPTION)
    return lane, org if isinstance(org, str) and org else NO_ORG


def _stamp(message: dramatiq.Message[Any], delay: int | None) -> dramatiq.Message[Any]:
    """``message`` as Dramatiq's Redis broker enqueues it: a fresh Redis id; if delayed, an eta and
    its queue's delay queue."""
    message = message.copy(options={"redis_message_id": str(uuid4())})
    if delay is None:
        return message
    return message.copy(queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay})


class LaneBroker(RedisBroker, PausableBroker):
    """Dramatiq's Redis broker with priority lanes, per-organization turns and a blocking fetch."""

    def __init__(self, *, fair: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self._hook_lists: dict[str, list[tuple[dramatiq.Middleware, Callable[..., Any]]]] = {}
        self.fair = fair
        #: The key whose existence pauses the queue (see :meth:`pause`).
        self.paused_key = f"{self.namespace}:{PAUSED_KEY}"
        self._paused_reading: tuple[float, bool] = (-math.inf, False)
        self.lane_scripts = {
            name: self.client.register_script(script)
            for name, script in (
                ("enqueue", _ENQUEUE),
                ("fetch", _FETCH),
                ("requeue", _REQUEUE),
                ("ack", _ACK),
            )
        }
        self._acks: GroupCommit[tuple[str, str], None] = GroupCommit(
            self._ack_one,
            self._ack_many,
            unreachable=(redis.ConnectionError,),
            abandoned=redis.ConnectionError,
        )

    def add_middleware(self, middleware: dramatiq.Middleware, **kwargs: Any) -> None:
        super().add_middleware(middleware, **kwargs)
        self._hook_lists = {}  # recomputed on next use

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """Dramatiq's ``emit_before``, calling only the middleware that implement the hook."""
        name = "before_" + signal
        for middleware, hook in self._hooks(name):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """Dramatiq's ``emit_after`` (last middleware first), calling only those that implement it."""
        name = "after_" + signal
        for middleware, hook in self._hooks(name):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def _hooks(self, name: str) -> list[tuple[dramatiq.Middleware, Callable[..., Any]]]:
        """The bound ``name`` hooks of the middleware that override Dramatiq's no-op, in call order.

        Every message passes ~20 middleware through ~8 hooks; most are the base class's no-ops.
        """
        hooks = self._hook_lists.get(name)
        if hooks is None:
            ordered = reversed(self.middleware) if name.startswith("after_") else self.middleware
            noop = getattr(dramatiq.Middleware, name, None)
            hooks = [
                (middleware, getattr(middleware, name))
                for middleware in ordered
                if getattr(getattr(middleware, name), "__func__", None) is not noop
            ]
            self._hook_lists[name] = hooks
        return hooks

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """Lanes for a queue; Dramatiq's polling consumer for its delayed-message queue (``.DQ``)."""
        if queue_name.endswith(".DQ"):
            return super().consume(queue_name, prefetch, timeout)
        return LaneConsumer(self, queue_name, prefetch)

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Dramatiq's ``RedisBroker.enqueue``, putting an undelayed message in its lane."""
        message = _stamp(message, delay)
        self.emit_before("enqueue", message, delay)
        lane = None if delay is not None else lane_of(message)
        if lane is None:
            self.do_enqueue(message.queue_name, message.options["redis_message_id"], message.encode())
        else:
            self.lane_scripts["enqueue"](args=self._lane_args(message, lane))
        self.emit_after("enqueue", message, delay)
        return message

    def enqueue_many(
        self, messages: Sequence[dramatiq.Message[Any]], *, delay: int | None = None
    ) -> list[dramatiq.Message[Any]]:
        """Enqueue ``messages`` in one round trip, a ``MULTI/EXEC`` transaction: all land or none do.

        Every message passes the middleware's ``before_enqueue`` (all of them first, as one
        :func:`~middleware.batches.enqueue_batch`) and, once they have landed, ``after_enqueue``, as
        with :meth:`enqueue`. Undelayed messages go to their lanes; delayed ones to their queue's delay
        queue (``.DQ``), as Dramatiq's own enqueue command puts them there.

        Raises:
            redis.RedisError: Redis refused the transaction or was unreachable: nothing was enqueued.
        """
        stamped = [_stamp(message, delay) for message in messages]
        if not stamped:
            return []
        with enqueue_batch():
            for message in stamped:
                self.emit_before("enqueue", message, delay)
        with self.client.pipeline(transaction=True) as pipe:
            lane_script = self.lane_scripts["enqueue"]
            pipe.script_load(lane_script.script)  # in the transaction, so no EVALSHA below can miss it
            for message in stamped:
                lane = None if delay is not None else lane_of(message)
                redis_id = message.options["redis_message_id"]
                if lane is None:
                    base = self._base(message.queue_name)
                    pipe.hset(f"{base}.msgs", redis_id, message.encode())
                    pipe.rpush(base, redis_id)
                else:
                    pipe.evalsha(lane_script.sha, 0, *self._lane_args(message, lane))
            pipe.execute()
        for message in stamped:
            self.emit_after("enqueue", message, delay)
        return stamped

    def _lane_args(self, message: dramatiq.Message[Any], lane: tuple[int, str]) -> list[Any]:
        """Arguments of the lane enqueue script for ``message``."""
        priority, org = lane
        return [
            self._base(message.queue_name),
            message.options["redis_message_id"],
            message.encode(),
            priority,
            org if self.fair else NO_ORG,
            BELL_MAX,
        ]

    def fetch(self, queue_name: str, count: int) -> list[bytes]:
        """Up to ``count`` payloads, highest priority first, organizations taking turns."""
        result = self.lane_scripts["fetch"](
            keys=[self.paused_key],
            args=[self.namespace, queue_name, self.broker_id, current_millis(), count],
        )
        return [data for data in result if data is not None]

    def ack(self, queue_name: str, redis_message_id: str) -> None:
        """Acknowledge a processed message: Dramatiq's ``ack``, written together with the acks other
        worker threads make at the same moment (one round trip for all of them)."""
        self._acks.submit((queue_name, redis_message_id))

    def _ack_one(self, ack: tuple[str, str]) -> None:
        self._ack_many([ack])

    def _ack_many(self, acks: Sequence[tuple[str, str]]) -> list[None]:
        args: list[Any] = [self.namespace, self.broker_id, current_millis()]
        for queue_name, redis_message_id in acks:
            args += [queue_name, redis_message_id]
        self.lane_scripts["ack"](args=args)
        return [None] * len(acks)

    def requeue_lanes(self, queue_name: str, messages: Iterable[MessageProxy]) -> None:
        """Put fetched-but-unprocessed messages back at the front of their lanes."""
        args: list[Any] = [self.namespace, queue_name, self.broker_id]
        for message in messages:
            priority, org = lane_of(message) or (5, NO_ORG)
            args += [message.options["redis_message_id"], priority, org if self.fair else NO_ORG]
        if len(args) > 3:
            self.lane_scripts["requeue"](args=args)

    def pause(self) -> None:
        """Stop every worker, current and future, from fetching messages; active ones finish."""
        self.client.set(self.paused_key, "1")
        self._paused_reading = (time.monotonic(), True)

    def resume(self) -> None:
        """Let workers fetch again, and wake the idle ones at once."""
        self.client.delete(self.paused_key)
        self._paused_reading = (time.monotonic(), False)
        self.ring_bells(self.get_declared_queues())

    def paused(self, *, max_age_s: float = 0.0) -> bool:
        """Whether the queue is paused, reusing this broker's last reading if it is under ``max_age_s``
        old (a worker's per-message check passes :data:`middleware.pause.CACHE_S`)."""
        read_at, paused = self._paused_reading
        now = time.monotonic()
        if now - read_at >= max_age_s:
            paused = bool(self.client.exists(self.paused_key))
            self._paused_reading = (now, paused)
        return paused

    def wait_for_bell(self, queue_name: str, timeout_s: float) -> None:
        """Block until a message is enqueued on ``queue_name`` (or the timeout passes)."""
        self.client.blpop([f"{self._base(queue_name)}.bell"], timeout=timeout_s)

    def ring_bells(self, queue_names: Iterable[str]) -> None:
        """Wake idle consumers now (after a resume)."""
        with self.client.pipeline(transaction=False) as pipe:
            for name in queue_names:
                pipe.rpush(f"{self._base(name)}.bell", *(["1"] * 64))
                pipe.ltrim(f"{self._base(name)}.bell", -BELL_MAX, -1)
            pipe.execute()

    def flush(self, queue_name: str) -> None:
        super().flush(queue_name)
        keys = list(self.client.scan_iter(match=f"{self._base(queue_name)}.p*", count=1000))
        keys.append(f"{self._base(queue_name)}.bell")
        self.client.delete(*keys)

    def _base(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}"


class LaneConsumer(Consumer):
    """Fetches from the lanes in batches; when idle, blocks on the queue's bell instead of polling."""

    def __init__(self, broker: LaneBroker, queue_name: str, prefetch: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.message_cache: list[bytes] = []
        self.queued_message_ids: set[str] = set()

    @property
    def outstanding_message_count(self) -> int:
        return len(self.queued_message_ids) + len(self.message_cache)

    def ack(self, message: MessageProxy) -> None:
        try:
            self.broker.ack(self.queue_name, message.options["redis_message_id"])
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        finally:
            self.queued_message_ids.discard(message.message_id)

    def nack(self, message: MessageProxy) -> None:
        try:
            self.broker.do_nack(self.queue_name, message.options["redis_message_id"])
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        finally:
            self.queued_message_ids.discard(message.message_id)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        self.broker.requeue_lanes(self.queue_name, messages)

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    message = dramatiq.Message.decode(self.message_cache.pop(0))
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                room = self.prefetch - self.outstanding_message_count
                if room <= 0:
                    time.sleep(0.005)  # busy: leave the bell to idle consumers
                    return None
                self.message_cache = self.broker.fetch(self.queue_name, room)
                if not self.message_cache:
                    self.broker.wait_for_bell(self.queue_name, IDLE_BLOCK_S)
                    return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
