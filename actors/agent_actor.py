"""``@agent_actor``: declare an agent kind as a Dramatiq actor.

An agent kind is an actor whose only message argument is the task id. The
decorated function receives an :class:`AgentJob` (the claimed task, its agent and
the orchestrator) and returns the result, usually ``job.run_agent()``::

    @agent_actor(kind="financial_report", time_limit=300_000)
    def financial_report(job: AgentJob) -> AttemptResult:
        return job.run_agent(instructions="Answer with a short financial summary.")

``ai_agents.kind`` selects the actor: the actor's name is the kind. The actor returns the
function's :class:`~middleware.outcome.AttemptResult` to Dramatiq, which hands it to
``TaskLifecycle.after_process_message`` as ``result``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import dramatiq
import redis

from actors.budget import BudgetPolicy
from actors.errors import AgentUnavailable, BrokerUnavailable
from actors.step_ledger import attempt_ledger
from middleware.agent_messages import AGENT_KIND_OPTION
from middleware.attempts import Attempt, current_attempt
from middleware.in_flight import RunOnLoop
from middleware.outcome import AttemptResult as AttemptResult  # re-exported: kinds import it from here
from middleware.outcome import stored_usage
from middleware.task_lifecycle import ENQUEUED_AT_OPTION, QUEUED_OPTION, EnqueueRejected
from middleware.tracing import abandon_publish
from orchestrator import AgentSpec, Orchestrator, TaskInput
from orchestrator.event_loop import offload, process_loop
from taskstore import Agent, Claim, Task, TaskStore, normalize_id, utcnow

#: An agent kind's function: sync (its run holds a worker thread) or ``async def`` (its run waits on the
#: process's event loop, ``QUEUE_CONCURRENCY`` at once, while the threads take the next messages).
AgentFunction = Callable[["AgentJob"], AttemptResult | Awaitable[AttemptResult]]

#: Least time between two database checks for a cancellation request during one run.
CANCEL_CHECK_S = 0.2


@dataclass(frozen=True)
class AgentJob:
    """One attempt at a task, as seen by an agent kind's function."""

    state: Attempt
    orchestrator: Orchestrator
    store: TaskStore
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)
    #: Record steps in the store's step ledger and resume after an earlier attempt's (``AGENTQ_STEP_LEDGER``).
    step_ledger: bool = True

    @property
    def claim(self) -> Claim:
        return self.state.claim

    @property
    def task(self) -> Task:
        return self.state.claim.task

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self.state.claim.task.attempts

    def agent(self) -> Agent:
        """The task's agent; :class:`AgentUnavailable` (not retryable) if it vanished, is inactive or
        belongs to another organization than the task."""
        agent = self.claim.agent
        if agent is None:
            raise AgentUnavailable(f"agent {self.task.agent_id!r} of task {self.task.id!r} does not exist")
        self.check_organization()
        if not agent.is_active:
            raise AgentUnavailable(f"agent {agent.id!r} of task {self.task.id!r} is inactive")
        return agent

    def check_organization(self) -> None:
        """Refuse (not retryable) to run another organization's agent on this task.

        ``create_task`` checks this too, but a row written past it (a member's direct insert or
        update, an older migration's looser policies) reaches the worker unchecked.
        """
        agent, task = self.claim.agent, self.task
        if agent is not None and agent.organization_id != task.organization_id:
            raise AgentUnavailable(
                f"task {task.id!r} of organization {task.organization_id!r} names agent {agent.id!r} "
                f"of organization {agent.organization_id!r}: a task runs only its own organization's agents"
            )

    def should_stop(self) -> bool:
        """True once the run must end: ``remove_job`` asked, or another worker took the task over.

        Called before every model and tool call. The database is asked at most every
        :data:`CANCEL_CHECK_S` (and not right after the claim), so a fast loop does not add a
        round trip per step; a cancellation is seen within that long of the next step. In between,
        the attempt's cancel signal (set by ``CancelWatch`` or a lost lease) stops an in-flight call.
        """
        known = self._known_without_asking()
        return self.store.cancel_requested(self.task.id) if known is None else known

    def _known_without_asking(self) -> bool | None:
        """Whether to stop, when the answer needs no database; None when it is time to ask it again."""
        if self.state.lost or self.state.cancel.is_set():
            return True
        now = time.monotonic()
        if now - self.state.cancel_checked_at < CANCEL_CHECK_S:
            return False
        self.state.cancel_checked_at = now
        return None

    def lose(self) -> None:
        """This attempt no longer holds its task (a step write was refused): stop at the next step."""
        self.state.lost = True

    async def should_stop_async(self) -> bool:
        """:meth:`should_stop` for a run on the event loop: the database is asked on the loop's executor."""
        known = self._known_without_asking()
        return await offload(self.store.cancel_requested, self.task.id) if known is None else known

    def run_agent(self, *, instructions: str | None = None) -> AttemptResult:
        """Run the agent loop for this task in this thread; ``instructions`` are appended to the agent's
        system prompt. An ``async def`` kind awaits :meth:`arun_agent` instead (no thread held).

        With the step ledger on, every model call and tool call is recorded, and an attempt at a firing
        that earlier attempts got part way through goes on after their completed steps.

        Raises:
            AgentUnavailable, BudgetExceeded: Before any model request; not retryable.
            AgentRunError: From the loop, carrying the usage, transcript and cost so far.
        """
        self.budget.check(self.store, self.task, utcnow())
        return process_loop().run(self._run(instructions))

    async def arun_agent(self, *, instructions: str | None = None) -> AttemptResult:
        """:meth:`run_agent` on the process's event loop, for an ``async def`` agent kind."""
        # The task was claimed moments ago (a cancel since then reaches the run through CancelWatch): the
        # first database check is a full interval from now, not from the claim, however long the run waited.
        self.state.cancel_checked_at = time.monotonic()
        if self.budget.cap_for(self.task.organization_id) is not None:  # asks the database
            await offload(self.budget.check, self.store, self.task, utcnow())
        return await self._run(instructions)

    async def _run(self, instructions: str | None) -> AttemptResult:
        agent = self.agent()
        prompt = "\n\n".join(part for part in (agent.system_prompt, instructions) if part) or None
        spec = AgentSpec(
            id=agent.id,
            name=agent.name,
            provider=agent.provider,
            model=agent.model,
            system_prompt=prompt,
            allowed_tools=agent.allowed_tools,
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
            max_turns=agent.max_turns,
            base_url=agent.base_url,
            tool_timeout_s=agent.tool_timeout_s,
            run_time_limit_s=agent.run_time_limit_s,
            fallback_provider=agent.fallback_provider,
            fallback_model=agent.fallback_model,
            stream=agent.stream,
            approval_tools=agent.approval_tools,
        )
        task = TaskInput(
            id=self.task.id,
            title=self.task.title,
            description=self.task.description,
            context=self.task.context,
            organization_id=self.task.organization_id,
        )
        ledger = attempt_ledger(self.store, self.claim, enabled=self.step_ledger, lost=self.lose)
        outcome = await self.orchestrator.arun(
            spec, task, should_stop=self.should_stop_async, ledger=ledger, cancel=self.state.cancel
        )
        return AttemptResult(
            result={"output": outcome.output, "turns": outcome.turns, "model": outcome.model},
            usage=stored_usage(outcome.usage, outcome.cost_usd),
            transcript=list(outcome.transcript),
            step=getattr(ledger, "last", None),
        )


@contextmanager
def pending_again_on_failure(
    store: TaskStore | None,
    task_ids: Sequence[str],
    *,
    queued_at: datetime | None,
    clock: Callable[[], datetime],
) -> Iterator[None]:
    """Undo the ``pending → queued`` move of ``task_ids`` (made at ``queued_at``) if the block raises.

    The one rollback of a failed enqueue, for ``add_task``, ``add_tasks``, ``retry_job`` and a bare
    ``send``: the tasks this enqueue queued are ``pending`` again (a later enqueue of them is left
    alone); ``queued_at`` None: the tasks were queued before (a re-send), nothing to undo. A Redis
    failure is raised as :class:`BrokerUnavailable`. A send the middleware refused
    (:class:`EnqueueRejected`) queued nothing and passes through untouched.
    """
    try:
        yield
    except EnqueueRejected:
        raise
    except Exception as exc:
        abandon_publish(exc)
        if store is not None and queued_at is not None:
            if len(task_ids) == 1:
                store.revert_queued(task_ids[0], queued_at=queued_at, now=clock())
            else:
                store.revert_queued_many(task_ids, queued_at=queued_at, now=clock())
        if isinstance(exc, redis.RedisError | dramatiq.errors.BrokerConnectionError):
            one = len(task_ids) == 1
            tasks = f"task {task_ids[0]!r}; it stays" if one else f"the {len(task_ids)} tasks; they stay"
            again = "it" if one else "them"
            state = "pending" if queued_at is not None else f"queued (the reconciler sends {again} again)"
            raise BrokerUnavailable(f"Redis did not accept {tasks} {state}: {exc}") from exc
        raise


class AgentActor(dramatiq.Actor[[str], AttemptResult]):
    """The actor of one agent kind. Sending validates the task id and reports Redis outages clearly."""

    store: TaskStore | None = None
    clock: Callable[[], datetime] = staticmethod(utcnow)
    #: An ``async def`` kind: its run is handed to the event loop (``middleware.in_flight``).
    runs_on_loop: bool = False

    @property
    def kind(self) -> str:
        return str(self.options[AGENT_KIND_OPTION])

    def send_with_options(
        self,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        delay: Any = None,
        **options: Any,
    ) -> dramatiq.Message[AttemptResult]:
        """Send a message for a task id, moving the task ``pending → queued`` (see ``TaskLifecycle``).

        A message marked :data:`~middleware.task_lifecycle.QUEUED_OPTION` is for a task already
        ``queued`` (``AgentTaskQueue``, retries, recoveries) and is only sent.

        Raises:
            InvalidTaskId, TaskNotFound, InvalidTransition: The task cannot be queued; nothing was sent.
            BrokerUnavailable: Redis did not take the message; the task is ``pending`` again (a
                message marked queued leaves it ``queued``, for the reconciler to send again).
        """
        if kwargs or len(args) != 1:
            raise TypeError(f"agent actor {self.actor_name!r} takes exactly one argument, the task id")
        task_id = normalize_id(args[0])
        queued_at = None
        if not options.get(QUEUED_OPTION):  # a bare send: TaskLifecycle queues the task at this time
            queued_at = options[ENQUEUED_AT_OPTION] = self.clock()
        try:
            with pending_again_on_failure(self.store, [task_id], queued_at=queued_at, clock=self.clock):
                return super().send_with_options(args=(task_id,), delay=delay, **options)
        except EnqueueRejected as exc:
            abandon_publish(exc.reason)
            raise exc.reason from exc


def agent_actor(
    *,
    kind: str,
    store: TaskStore,
    orchestrator: Callable[[], Orchestrator],
    broker: dramatiq.Broker | None = None,
    queue_name: str | None = None,
    clock: Callable[[], datetime] = utcnow,
    budget: BudgetPolicy | None = None,
    step_ledger: bool = True,
    **options: Any,
) -> Callable[[AgentFunction], AgentActor]:
    """Declare the agent kind ``kind`` as an actor on ``broker`` (default: the global broker).

    Args:
        kind: The ``ai_agents.kind`` this actor runs; also the actor's name.
        store: The task store the actor reverts enqueues in when Redis refuses a message.
        orchestrator: Returns the orchestrator that runs the agent loop (called per attempt).
        budget: The organizations' monthly spending caps (default: none).
        step_ledger: Record steps and resume after an earlier attempt's (``AGENTQ_STEP_LEDGER``).
        broker: The broker to declare on.
        queue_name: Redis queue for this kind (default: the kind).
        **options: Dramatiq actor options (``time_limit``, ``max_retries`` caps attempts, ``priority`` …).
    """

    policy = budget or BudgetPolicy()

    def decorator(fn: AgentFunction) -> AgentActor:
        on_loop = inspect.iscoroutinefunction(fn)
        time_limit = options.get("time_limit")

        def run(task_id: str) -> AttemptResult | None:
            state = current_attempt(task_id)
            job = AgentJob(state, orchestrator(), store, policy, step_ledger)
            job.check_organization()  # before the kind's function, whatever it does
            produced: AttemptResult | RunOnLoop
            if not on_loop:
                produced = cast(AttemptResult, fn(job))
            elif state.on_loop:  # TaskLifecycle starts it on the event loop, and Dramatiq acknowledges it
                coroutine = cast(Coroutine[Any, Any, AttemptResult], fn(job))
                produced = RunOnLoop(coroutine, time_limit if isinstance(time_limit, int) else None)
            else:  # its result is passed on (a pipeline, callbacks): this thread waits for it
                produced = process_loop().run(cast(Coroutine[Any, Any, AttemptResult], fn(job)))
            if state.passes_result:
                assert not isinstance(produced, RunOnLoop)
                return produced
            state.returned = produced  # for TaskLifecycle; returning it would make Dramatiq log a warning
            return None

        run.__name__ = fn.__name__
        run.__qualname__ = fn.__qualname__
        run.__doc__ = fn.__doc__
        run.__module__ = fn.__module__
        declare = dramatiq.actor(
            actor_class=AgentActor,
            actor_name=kind,
            queue_name=queue_name or kind,
            broker=broker,
            **{AGENT_KIND_OPTION: kind, **options},
        )
        actor = cast(AgentActor, declare(run))
        actor.store = store
        actor.clock = clock
        actor.runs_on_loop = on_loop
        return actor

    return decorator
