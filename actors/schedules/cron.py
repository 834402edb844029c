"""Cron schedules for recurring tasks, evaluated in the task's IANA time zone.

A pure module: no I/O, no Dramatiq, no database. The cron arithmetic is
``cronsim``'s (it follows Debian/Vixie cron, DST quirks included); this module
validates input, narrows the syntax to standard 5-field cron, translates the
``@`` aliases, and turns cronsim's local wall-clock results into UTC instants.

Syntax accepted
---------------
``minute hour day-of-month month day-of-week``, whitespace separated:

* ``*``, numbers, lists (``1,15``), ranges (``1-5``), steps (``*/15``,
  ``1-30/5``); ``N/S`` means ``N-max/S`` (cronsim's reading).
* Month names ``JAN``-``DEC`` and weekday names ``SUN``-``SAT``, any case,
  also inside ranges and lists (``MON-FRI``, ``jan,jul``).
* Day-of-week 0 and 7 are both Sunday.
* Day-of-month and day-of-week: when both are restricted (neither starts with
  ``*``) a day matching *either* fires (``0 0 13 * 5`` runs on the 13th and on
  every Friday); when either starts with ``*`` both must match. This is Vixie
  and Debian cron's rule, and cronsim's.
* Aliases, any case, alone: ``@yearly`` = ``@annually`` = ``0 0 1 1 *``,
  ``@monthly`` = ``0 0 1 * *``, ``@weekly`` = ``0 0 * * 0``, ``@daily`` =
  ``@midnight`` = ``0 0 * * *``, ``@hourly`` = ``0 * * * *``. cronsim has no
  aliases, so they are mapped to these 5-field forms before it sees them.

Rejected with :class:`InvalidCronExpression`: anything but 5 fields (so
cronsim's 6-field form with seconds), ``@reboot`` (a queue has no boot to run
at), unknown aliases, and cronsim's Quartz-style extensions ``L``, ``LW``,
``W``, ``5L``, ``MON#2`` and ``?``. They are not standard 5-field cron, DESIGN
§7 promises standard cron, and accepting them would tie stored schedules to
one library. Values out of range, empty list items, zero steps, reversed
ranges (``5-1``) and day/month pairs that never exist (``0 0 30 2 *``) are
rejected too (by the field-shape check here or by cronsim), reported the same way.

Time zones: any key ``zoneinfo`` loads from the IANA database
(``America/New_York``, ``UTC``, ``Etc/GMT+5``), exact case, except
``localtime``, which is a host's symlink rather than an IANA name.
Otherwise :class:`UnknownTimezone`.

Daylight saving (cronsim's documented Debian rules)
---------------------------------------------------
Debian cron treats a job specially when neither its minute nor its hour field
starts with ``*`` ("runs at a specific time, or with a granularity greater than
one hour"); cronsim then works on local wall-clock time:

* spring forward: a time inside the gap runs once, right after the gap. In
  America/New_York on 2027-03-14 (02:00 EST -> 03:00 EDT), ``30 2 * * *`` fires
  at 03:00 EDT = 07:00 UTC, then 2027-03-15 02:30 EDT = 06:30 UTC. Several
  times inside one gap collapse into that one firing.
* fall back: a time inside the repeated hour runs once, in the first copy. In
  America/New_York on 2027-11-07, ``30 1 * * *`` fires at 01:30 EDT = 05:30 UTC
  only; the next firing is 2027-11-08 01:30 EST = 06:30 UTC.

Every other schedule (minute or hour field starting with ``*``: ``0 * * * *``,
``*/15 * * * *``, ``* 1 * * *``, ``*/15 2 * * *``) is scheduled normally on the
real timeline: both copies of a repeated hour fire (``30 * * * *`` runs at
01:30 EDT and at 01:30 EST), and minutes inside a gap do not exist, so they
are skipped (``30 * * * *`` goes from 01:30 EST to 03:30 EDT; ``* 2 * * *``
does not run at all that day).

One correction on top of cronsim: on wall-clock time cronsim cannot tell the
two copies of a repeated hour apart, so from a moment in the second copy it
would answer a first-copy time, which is in the past. :meth:`CronSchedule.next_after`
skips such answers, so its result is always strictly after the moment given.

Firing after downtime
---------------------
A caller stores each schedule's ``next_run_at``. On every tick, when
``next_run_at <= now`` it fires the task once and stores
``schedule.next_after(now)`` -- not ``schedule.next_after(next_run_at)``, which
would replay every slot missed while the scheduler was down. Missed slots
collapse into one firing, as the schedule semantics require (docs/architecture.md,
*Queue semantics*). (That two schedulers never
fire the same schedule twice is the caller's concern: claim the row with a
conditional update on ``next_run_at``.)

Cost
----
:func:`parse_schedule` keeps the last :data:`PARSE_CACHE_SIZE` parsed schedules
in an LRU keyed by (expression, time zone), sized above the 10,000 schedules a
scheduler tick may evaluate (an LRU smaller than a cyclically scanned working
set never hits). A ``cronsim.CronSim`` is an iterator bound to its start
instant, so :meth:`~CronSchedule.next_after` builds a fresh one per call from
the validated expression. Measured over 10,000 mixed schedules (the benchmark in
``tests/unit/test_cron.py``, a noisy 2-core box): 270-430 ms, 27-43 us per call,
of which building the ``CronSim`` is about 10 us; copying a cached one and
resetting its private state instead saved about 3 us per call, not worth
depending on cronsim internals (its constructor also decides the DST handling).
Wildcard-hour schedules outside UTC cost most: cronsim steps them through UTC.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from config.errors import AgentQueueError, short_repr

__all__ = [
    "DEFAULT_TIMEZONE",
    "PARSE_CACHE_SIZE",
    "CronSchedule",
    "InvalidCronExpression",
    "NaiveMoment",
    "NoFiringAfter",
    "ScheduleError",
    "UnknownTimezone",
    "parse_schedule",
]

DEFAULT_TIMEZONE = "UTC"

#: Parsed schedules kept by :func:`parse_schedule`; above the 10,000 of one scheduler tick.
PARSE_CACHE_SIZE = 32_768

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Shape of one field in standard cron: comma-separated terms, each `*`, a value or a
# range `a-b`, optionally `/step`; a value is digits or a name (names are checked by
# cronsim, which only knows them in the month and day-of-week fields). Ranges,
# values and names are left to cronsim; this only keeps its extensions out.
_ATOM = r"(?:[0-9]+|[A-Za-z]+)"
_TERM = rf"(?:\*|{_ATOM}(?:-{_ATOM})?)(?:/[0-9]+)?"
_FIELD = re.compile(rf"{_TERM}(?:,{_TERM})*", re.ASCII)
# cronsim's extensions: `L` and `LW` (last day / weekday of month), `15W`, `5L` (last
# Friday), `MON#2`; and Quartz's `?`. No month or weekday name contains them.
_EXTENSION = re.compile(r"[#?]|\bLW?\b|[0-9][LW]\b", re.ASCII | re.IGNORECASE)

# What each field allows, for messages. cronsim's messages ("Bad minute") name the field.
_ALLOWED = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31 and a day that the months given have",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT, 0 and 7 = Sunday",
}
_CRONSIM_FIELD = {f"Bad {name}": name for name in FIELDS}

# The only zones whose offset is constantly zero that we hand to cronsim as
# `datetime.UTC`: cronsim skips its DST machinery for it (same results, faster).
_PLAIN_UTC = frozenset({"UTC", "Etc/UTC"})


class ScheduleError(AgentQueueError, ValueError):
    """A schedule, its time zone, or a moment given to it is unusable."""


class InvalidCronExpression(ScheduleError):
    """The expression is not standard 5-field cron (or names a date that never exists)."""

    def __init__(self, expression: object, reason: str) -> None:
        super().__init__(f"cron expression {short_repr(expression)} is invalid: {reason}")
        self.expression = expression
        self.reason = reason


class UnknownTimezone(ScheduleError):
    """The time zone is not a key of the IANA time zone database."""

    def __init__(self, timezone: object) -> None:
        super().__init__(
            f"time zone {short_repr(timezone)} is not an IANA time zone"
            " (for example 'UTC' or 'America/New_York')"
        )
        self.timezone = timezone


class NaiveMoment(ScheduleError):
    """:meth:`CronSchedule.next_after` needs an aware datetime: a naive one has no instant."""

    def __init__(self, moment: object) -> None:
        super().__init__(f"moment {moment!r} is not an aware datetime (give it a tzinfo, e.g. UTC)")
        self.moment = moment


class NoFiringAfter(ScheduleError):
    """No firing exists in cronsim's 50-year horizon (or before ``datetime.max``)."""

    def __init__(self, schedule: CronSchedule, moment: datetime) -> None:
        super().__init__(
            f"cron expression {schedule.expression!r} in {schedule.timezone!r} "
            f"has no firing after {moment.isoformat()}"
        )
        self.schedule = schedule
        self.moment = moment


def _check_fields(expression: str, fields: list[str]) -> None:
    """Reject what is not standard 5-field cron before cronsim sees it."""
    if len(fields) != len(FIELDS):
        extra = "; seconds are not supported" if len(fields) == len(FIELDS) + 1 else ""
        raise InvalidCronExpression(
            expression,
            f"has {len(fields)} fields, expected 5 (minute hour day-of-month month day-of-week){extra}",
        )
    for name, text in zip(FIELDS, fields, strict=True):
        if _EXTENSION.search(text):
            raise InvalidCronExpression(
                expression,
                f"{name} field {text!r} uses a Quartz-style extension (L, W, #, ?) that standard cron lacks",
            )
        if not _FIELD.fullmatch(text):
            raise InvalidCronExpression(
                expression, f"{name} field {text!r} is not a list of values, ranges and steps"
            )


def _translate(expression: str) -> str:
    """The 5-field form cronsim gets for a normalised, non-empty expression."""
    if expression.startswith("@"):
        alias = expression.lower()
        if alias in ALIASES:
            return ALIASES[alias]
        if alias == "@reboot":
            raise InvalidCronExpression(expression, "@reboot is not a schedule (a task queue has no boot)")
        if " " in expression:
            raise InvalidCronExpression(expression, "an @ alias stands alone, without fields")
        raise InvalidCronExpression(expression, f"unknown alias; known: {', '.join(ALIASES)}")
    fields = expression.split(" ")
    _check_fields(expression, fields)
    try:
        # The start instant is irrelevant to parsing; cronsim validates in its constructor.
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as error:
        message = str(error)
        if message in _CRONSIM_FIELD:
            name = _CRONSIM_FIELD[message]
            text = fields[FIELDS.index(name)]
            raise InvalidCronExpression(
                expression,
                f"bad {name} field {text!r} (values {_ALLOWED[name]}; ranges low-high; steps from 1)",
            ) from None
        raise InvalidCronExpression(expression, message) from None
    return expression


def _zone(timezone: object) -> tzinfo:
    if not isinstance(timezone, str) or not timezone or timezone == "localtime":
        raise UnknownTimezone(timezone)
    if timezone in _PLAIN_UTC:
        return UTC
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: not a normalised relative key ("../x", "/etc/x"); OSError: a directory.
        raise UnknownTimezone(timezone) from None


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A validated cron expression and the IANA time zone it is evaluated in.

    Construct with :func:`parse_schedule` (cached); constructing directly validates too.
    ``expression`` keeps the text as given with whitespace normalised to single spaces.
    """

    expression: str
    timezone: str = DEFAULT_TIMEZONE
    _cron: str = field(init=False, repr=False, compare=False)
    _zone: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        given: object = self.expression  # typed str, but callers may pass anything
        if not isinstance(given, str):
            raise InvalidCronExpression(given, "is not a string")
        expression = " ".join(given.split())
        if not expression:
            raise InvalidCronExpression(given, "is empty")
        cron = _translate(expression)
        zone = _zone(self.timezone)
        object.__setattr__(self, "expression", expression)
        object.__setattr__(self, "_cron", cron)
        object.__setattr__(self, "_zone", zone)

    def local(self, moment: datetime) -> datetime:
        """An aware ``moment`` as wall-clock time in this schedule's zone."""
        return moment.astimezone(self._zone)

    def next_after(self, moment: datetime) -> datetime:
        """The first firing strictly after ``moment`` (aware, any zone), as an aware UTC datetime."""
        given: object = moment  # typed datetime, but callers may pass anything
        if not isinstance(given, datetime) or given.utcoffset() is None:
            raise NaiveMoment(given)
        try:
            # In UTC: comparisons are then plain (Python never calls a time in a repeated
            # hour equal to one in another zone), and a nonexistent wall time given in
            # this zone becomes its real instant before cronsim sees it.
            instant = moment.astimezone(UTC)
            firings = CronSim(self._cron, instant.astimezone(self._zone))
            firing = next(firings).astimezone(UTC)
            # Only from the second copy of a repeated hour can cronsim's wall-clock
            # arithmetic answer an earlier instant (a first-copy time); its later
            # answers move forward in wall time, so this ends once past that hour.
            while firing <= instant:
                firing = next(firings).astimezone(UTC)
        except (StopIteration, OverflowError):
            raise NoFiringAfter(self, moment) from None
        return firing


def parse_schedule(expression: str, timezone: str | None = None) -> CronSchedule:
    """Validate ``expression`` (standard 5-field cron or an @ alias) and ``timezone`` (IANA key).

    ``timezone`` None means ``"UTC"``. Raises :class:`InvalidCronExpression` or
    :class:`UnknownTimezone`, whose messages name the bad value. Results are cached
    (:data:`PARSE_CACHE_SIZE` entries, least recently used evicted).
    """
    text: object = expression  # typed str, but callers may pass anything
    zone: object = DEFAULT_TIMEZONE if timezone is None else timezone
    if not isinstance(text, str):
        raise InvalidCronExpression(text, "is not a string")
    if not isinstance(zone, str):
        raise UnknownTimezone(zone)
    # Only strings reach the cache: it hashes its arguments.
    return _parse_cached(text, zone)


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_cached(expression: str, timezone: str) -> CronSchedule:
    return CronSchedule(expression, timezone)
