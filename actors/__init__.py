"""Actors: the broker, the agent kinds, the ``AgentTaskQueue`` facade and the CLI.

``dramatiq actors`` imports this package to find the broker and the agent-kind
actors; applications import ``agent_task_queue`` from it::

    from actors import agent_task_queue, financial_report

    job = agent_task_queue.add_task(task_id, 5, 0)
    financial_report.send(other_task_id)
"""

from __future__ import annotations

from actors.app import runtime
from actors.kinds import financial_report, general, member_retention
from actors.schedules.tick import schedule_tick

#: The configured :class:`~actors.task_queue.AgentTaskQueue`.
agent_task_queue = runtime.queue
broker = runtime.broker

__all__ = [
    "agent_task_queue",
    "broker",
    "financial_report",
    "general",
    "member_retention",
    "runtime",
    "schedule_tick",
]
