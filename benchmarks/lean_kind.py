"""The sync agent kind of ``python -m benchmarks.pipeline --lean``.

Its runs hold their worker thread, as every kind's did before runs moved to the event loop; the lean
runs pair it with the per-task work added since then switched off (``benchmarks.pipeline.LEAN_ENV``),
so the pipeline can be compared like for like with a build that predates both.
"""

from __future__ import annotations

from actors.agent_actor import AgentJob
from actors.app import agent_kind
from benchmarks.pipeline import LEAN_KIND
from middleware.outcome import AttemptResult


@agent_kind(kind=LEAN_KIND)
def bench_sync(job: AgentJob) -> AttemptResult:
    """A ``general`` agent run in its worker thread."""
    return job.run_agent()
