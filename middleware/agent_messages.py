"""Recognising agent-task messages among everything else on the broker."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

#: Actor option that marks an actor as an agent kind (set by ``actors.agent_actor``).
AGENT_KIND_OPTION = "agent_kind"

#: Message option: the message's priority lane (0-10), read by the lane broker.
LANE_OPTION = "agentq_lane"
#: Message option: the organization whose turn the message waits for.
ORG_OPTION = "agentq_org"

#: Message option: when the start rate limit admitted the message (ms since the epoch, Redis's clock).
ADMITTED_AT_OPTION = "agentq_admitted_at_ms"

#: A message as producers (``Message``) and workers (``MessageProxy``) see it.
AnyMessage = dramatiq.Message[Any] | MessageProxy


def agent_kind(broker: dramatiq.Broker, message: AnyMessage) -> str | None:
    """The agent kind of the actor ``message`` is for, or ``None`` for an ordinary actor."""
    try:
        actor = broker.get_actor(message.actor_name)
    except dramatiq.errors.ActorNotFound:
        return None
    kind = actor.options.get(AGENT_KIND_OPTION)
    return kind if isinstance(kind, str) else None


def message_task_id(message: AnyMessage) -> object:
    """The task id argument of an agent message (validated by the caller)."""
    return message.args[0] if len(message.args) == 1 and not message.kwargs else message.args


def put_back(broker: dramatiq.Broker, message: MessageProxy, *, delay_ms: int | None) -> None:
    """Enqueue a copy of ``message`` (same lane and options) to run later; the original is then acked.

    How a middleware defers a message without failing it: pause, rate limits, organization caps.
    """
    copy: dramatiq.Message[Any] = message.copy()
    broker.enqueue(copy, delay=delay_ms)
