"""The agent kinds this deployment runs. ``ai_agents.kind`` names one of them.

Each kind is its own actor and Redis queue, so kinds get their own time limits
and can be given their own workers (``dramatiq actors --queues financial_report``).
"""

from __future__ import annotations

from actors.agent_actor import AgentJob
from actors.app import agent_kind
from middleware.outcome import AttemptResult


@agent_kind(kind="general")
async def general(job: AgentJob) -> AttemptResult:
    """Any agent whose row does not ask for a specialised kind."""
    return await job.arun_agent()


@agent_kind(kind="financial_report", time_limit=15 * 60 * 1000)
async def financial_report(job: AgentJob) -> AttemptResult:
    """Revenue and spending reports for an organization; allowed a longer time limit."""
    return await job.arun_agent(
        instructions=(
            "You write financial reports for a business owner. State the period covered, give"
            " figures with their units, compute totals and changes with the calculate tool, and end"
            " with one recommendation."
        )
    )


@agent_kind(kind="member_retention", time_limit=5 * 60 * 1000)
async def member_retention(job: AgentJob) -> AttemptResult:
    """Finds members at risk of leaving and drafts a personal win-back message for each."""
    return await job.arun_agent(
        instructions=(
            "You help a membership business keep its members. For each member in the context, judge the risk"
            " of leaving from their recent activity, and draft a short, friendly win-back message."
        )
    )
