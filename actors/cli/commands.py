"""``agentq``: the operator's command line.

agentq migrate              create or upgrade the schema (safe to run twice)
agentq schema               print the Postgres migration SQL
agentq stats                queue statistics (JSON)
agentq job ID               one job, with its runs
agentq events ID            the job's live events, one per line (--follow, --after ID, --timeout S, --json)
agentq retry ID [--resume]  retry a failed job (``--resume``: after its completed steps)
agentq dead-letters         list failed jobs (``--retry-all`` retries them all)
agentq remove ID            cancel a job (a running one is interrupted within a second; a schedule ends)
agentq approvals            tool calls waiting for a person's decision, the longest waiting first
agentq approve ID           approve the tool call a job waits for (``--note``, ``--by``)
agentq reject ID            reject it (``--reason``, ``--by``): the model is given the reason
agentq schedule ID CRON     put a scheduled task on a cron schedule (``--timezone``)
agentq schedules            list schedules with their next run in UTC and in their own zone
agentq cleanup              apply the retention policy
agentq pause | resume       stop / restart task starts on every worker
agentq limits [BUCKET…]     provider and organization limits: each bucket's use now (JSON)
agentq worker [ARGS…]       run ``dramatiq actors`` with AGENTQ_WORKER_THREADS threads
agentq demo                 the embedded demo: a worker runs a handful of tasks end to end
agentq dashboard            serve the operator dashboard (``--host 127.0.0.1 --port 8600``)
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from config.errors import AgentQueueError

if TYPE_CHECKING:
    from taskstore import Task


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _print(value: Any) -> None:
    print(json.dumps(_jsonable(value), indent=2, ensure_ascii=False))


def _migrate(args: argparse.Namespace) -> int:
    from actors import runtime

    applied = runtime.store.migrate()
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from taskstore.schema import render_all

    print(render_all("postgres"), end="")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    _print(agent_task_queue.get_queue_stats())
    return 0


def _job(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    job = agent_task_queue.get_job(args.id)
    if job is None:
        print(f"no job {args.id}", file=sys.stderr)
        return 1
    _print(job)
    return 0


def _events(args: argparse.Namespace) -> int:
    from actors import agent_task_queue
    from actors.events import event_line

    events = agent_task_queue.events(args.id, after=args.after, follow=args.follow, timeout_s=args.timeout)
    try:
        for event in events:
            line = json.dumps(event.to_dict(), ensure_ascii=False) if args.json else event_line(event)
            print(line, flush=True)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
    return 0


def _retry(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    _print({"id": args.id, "status": agent_task_queue.retry_job(args.id, resume=args.resume).status})
    return 0


def _remove(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    agent_task_queue.remove_job(args.id)
    return 0


def _approvals(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    _print(agent_task_queue.list_approvals(limit=args.limit, offset=args.offset))
    return 0


def _decided_by(args: argparse.Namespace) -> str | None:
    """``--by``, else the operating system's user name (who ran the command)."""
    if args.by is not None:
        return str(args.by)
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment
        return None


def _approve(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    job = agent_task_queue.approve(args.id, note=args.note, decided_by=_decided_by(args))
    _print({"id": job.id, "status": job.status, "decision": "approved"})
    return 0


def _reject(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    job = agent_task_queue.reject(args.id, args.reason, decided_by=_decided_by(args))
    _print({"id": job.id, "status": job.status, "decision": "rejected"})
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    if args.retry_all:
        print(f"retried {agent_task_queue.retry_dead_letters()} dead-lettered job(s)")
        return 0
    jobs = agent_task_queue.list_dead_letters(limit=args.limit, offset=args.offset)
    _print(
        [
            {
                "id": job.id,
                "title": job.task.title,
                "attempts": job.attempts_made,
                "failed_at": job.task.failed_at,
                "failed_reason": job.failed_reason,
            }
            for job in jobs
        ]
    )
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    job = agent_task_queue.add_scheduled_task(args.id, args.cron, args.timezone)
    _print(
        {
            "id": job.id,
            "cron": job.task.schedule_cron,
            "timezone": job.task.schedule_timezone,
            "next_run_at": job.task.next_run_at,
        }
    )
    return 0


def _schedules(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    _print(
        [
            _schedule_row(task)
            for task in agent_task_queue.list_schedules(limit=args.limit, offset=args.offset)
        ]
    )
    return 0


def _schedule_row(task: Task) -> dict[str, Any]:
    """One row of ``agentq schedules``.

    A schedule whose stored cron expression or time zone is unusable (written to the table directly)
    is listed with ``error`` naming the task and the bad value, and reported once on stderr; the
    listing goes on. It is not failed here: listing is read-only, and the scheduler's next tick
    disables it and fails the task.
    """
    from actors.schedules.cron import ScheduleError, parse_schedule

    row: dict[str, Any] = {
        "id": task.id,
        "title": task.title,
        "cron": task.schedule_cron,
        "timezone": "UTC" if task.schedule_timezone is None else task.schedule_timezone,
        "status": task.status,
        "next_run_utc": task.next_run_at,
        "next_run_local": None,
        "last_run_at": task.last_run_at,
    }
    try:
        schedule = parse_schedule(task.schedule_cron or "", task.schedule_timezone)
    except ScheduleError as exc:
        row["error"] = f"schedule of task {task.id} is unusable: {exc}"
        print(f"agentq: {row['error']}", file=sys.stderr)
        return row
    if task.next_run_at is not None:
        row["next_run_local"] = schedule.local(task.next_run_at)
    return row


def _pause(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    agent_task_queue.pause_queue()
    return 0


def _resume(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    agent_task_queue.resume_queue()
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from actors import agent_task_queue

    _print(agent_task_queue.cleanup_jobs())
    return 0


def _limits(args: argparse.Namespace) -> int:
    """Print the configured limits and each bucket's use now: the buckets used in the last hour, or
    those named."""
    import redis

    from actors import runtime
    from orchestrator.limits import RedisLimiter

    settings = runtime.settings
    configured = {
        "models": settings.provider_limits,
        "org_tpm": settings.org_tpm,
        "organizations": settings.org_limits,
        "max_wait_ms": settings.limit_max_wait_ms,
    }
    limiter = runtime.orchestrator().limiter
    if not isinstance(limiter, RedisLimiter):
        print(
            "agentq: no provider or organization limits are configured"
            " (AGENTQ_PROVIDER_LIMITS_JSON, AGENTQ_ORG_TPM, AGENTQ_ORG_LIMITS_JSON)",
            file=sys.stderr,
        )
        _print({"configured": configured, "buckets": []})
        return 0
    try:
        buckets = limiter.usage(args.buckets or None)
    except redis.RedisError as exc:
        print(f"agentq: Redis did not answer: {exc}", file=sys.stderr)
        return 1
    _print({"configured": configured, "buckets": buckets})
    return 0


def _worker(args: argparse.Namespace) -> int:
    from config.settings import load_settings

    settings = load_settings()
    # Dramatiq's own shutdown wait is a backstop a little past ours (ShutdownDeadline cuts tasks off first).
    backstop = str(settings.shutdown_timeout_ms + 10_000)
    command = [
        sys.executable,
        "-m",
        "dramatiq",
        "actors",
        "--threads",
        str(settings.threads),
        "--worker-shutdown-timeout",
        backstop,
        *args.dramatiq_args,
    ]
    os.execv(command[0], command)


def _demo(args: argparse.Namespace) -> int:
    from actors.cli.demo import run_demo

    return run_demo(timeout_s=args.timeout)


def _dashboard(args: argparse.Namespace) -> int:
    from dashboard.server import serve

    return serve(host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentq", description="Operate Agent Task Queue.")
    commands = parser.add_subparsers(dest="command", required=True)
    simple: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
        "migrate": (_migrate, "create or upgrade the schema in the configured database"),
        "schema": (_schema, "print the Postgres migration SQL (what a Supabase user applies)"),
        "stats": (_stats, "print queue statistics"),
        "cleanup": (_cleanup, "apply the retention policy to finished jobs"),
        "pause": (_pause, "stop every worker from starting tasks (active ones finish)"),
        "resume": (_resume, "let workers start tasks again"),
    }
    for name, (handler, help_text) in simple.items():
        commands.add_parser(name, help=help_text).set_defaults(handler=handler)
    for name, handler, help_text in (
        ("job", _job, "show one job and its runs"),
        ("retry", _retry, "retry a failed job with a fresh set of attempts"),
        ("remove", _remove, "cancel a job (a running one is interrupted within a second)"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("id", help="job id (= task id)")
        sub.set_defaults(handler=handler)
        if name == "retry":
            sub.add_argument(
                "--resume", action="store_true", help="go on after the failed firing's completed steps"
            )
    events = commands.add_parser("events", help="print a job's live events, one per line")
    events.add_argument("id", help="job id (= task id)")
    events.add_argument(
        "--follow", action="store_true", help="keep printing new events until the job ends (or --timeout)"
    )
    events.add_argument("--after", default=None, metavar="ID", help="only the events after this event id")
    events.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="stop following after S seconds"
    )
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(handler=_events)
    schedule = commands.add_parser("schedule", help="put a scheduled task on a cron schedule")
    schedule.add_argument("id", help="task id (a task created with task_type='scheduled')")
    schedule.add_argument("cron", help="5-field cron expression, e.g. '0 9 * * 1'")
    schedule.add_argument("--timezone", default=None, help="IANA time zone (default: the task's, then UTC)")
    schedule.set_defaults(handler=_schedule)
    schedules = commands.add_parser(
        "schedules", help="list schedules with their next run in UTC and local time"
    )
    schedules.add_argument("--limit", type=int, default=100)
    schedules.add_argument("--offset", type=int, default=0)
    schedules.set_defaults(handler=_schedules)
    approvals = commands.add_parser("approvals", help="tool calls waiting for a decision, oldest first")
    approvals.add_argument("--limit", type=int, default=100)
    approvals.add_argument("--offset", type=int, default=0)
    approvals.set_defaults(handler=_approvals)
    approve = commands.add_parser("approve", help="approve the tool call a job waits for; it resumes")
    approve.add_argument("id", help="job id (= task id)")
    approve.add_argument("--note", default=None, help="why (recorded with the decision)")
    approve.add_argument("--by", default=None, help="who decides (default: cli:<your user name>)")
    approve.set_defaults(handler=_approve)
    reject = commands.add_parser("reject", help="reject the tool call a job waits for; the model is told why")
    reject.add_argument("id", help="job id (= task id)")
    reject.add_argument("--reason", required=True, help="given to the model as the tool's result")
    reject.add_argument("--by", default=None, help="who decides (default: cli:<your user name>)")
    reject.set_defaults(handler=_reject)
    dead = commands.add_parser("dead-letters", help="list failed jobs, or retry them all")
    dead.add_argument("--limit", type=int, default=100)
    dead.add_argument("--offset", type=int, default=0)
    dead.add_argument("--retry-all", action="store_true", help="retry every dead-lettered job")
    dead.set_defaults(handler=_dead_letters)
    limits = commands.add_parser("limits", help="provider and organization limits: each bucket's use now")
    limits.add_argument(
        "buckets",
        nargs="*",
        help="bucket names ('openai:gpt-4o-mini', 'org:<id>'); default: used in the last hour",
    )
    limits.set_defaults(handler=_limits)
    worker = commands.add_parser(
        "worker", help="run `dramatiq actors` (QUEUE_CONCURRENCY runs in flight per process)"
    )
    worker.add_argument("dramatiq_args", nargs=argparse.REMAINDER, help="extra arguments for dramatiq")
    worker.set_defaults(handler=_worker)
    demo = commands.add_parser("demo", help="run the embedded demo end to end")
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the demo tasks")
    demo.set_defaults(handler=_demo)
    board = commands.add_parser("dashboard", help="serve the operator dashboard")
    board.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (another than loopback needs a token)"
    )
    board.add_argument("--port", type=int, default=8600, help="port to listen on (default 8600)")
    board.set_defaults(handler=_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentq`` console script."""
    from config.logs import configure_logging
    from config.settings import load_settings

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings)
        result: int = args.handler(args)
    except AgentQueueError as exc:
        print(f"agentq: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
