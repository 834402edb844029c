"""Cron schedules: syntax, time zones, daylight saving, bad input. Pure, no clock: explicit instants.

DST dates used (2027): America/New_York springs forward on Sunday 14 March (02:00 EST -> 03:00
EDT, at 07:00 UTC) and falls back on Sunday 7 November (02:00 EDT -> 01:00 EST, at 06:00 UTC, so
01:00-02:00 local happens twice). Europe/Paris springs forward on Sunday 28 March (02:00 CET ->
03:00 CEST, at 01:00 UTC) and falls back on Sunday 31 October (03:00 CEST -> 02:00 CET, at 01:00
UTC, so 02:00-03:00 local happens twice). EST = UTC-5, EDT = UTC-4, CET = UTC+1, CEST = UTC+2.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from actors.schedules.cron import (
    PARSE_CACHE_SIZE,
    CronSchedule,
    InvalidCronExpression,
    NaiveMoment,
    NoFiringAfter,
    UnknownTimezone,
    parse_schedule,
)
from config.errors import AgentQueueError

NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def firings(schedule: CronSchedule, start: datetime, count: int) -> list[datetime]:
    """The first ``count`` firings after ``start``, each found from the previous one."""
    found: list[datetime] = []
    moment = start
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(moment)
    return found


def firings_between(schedule: CronSchedule, start: datetime, end: datetime) -> list[datetime]:
    """Every firing strictly after ``start`` and before ``end``."""
    found: list[datetime] = []
    moment = schedule.next_after(start)
    while moment < end:
        found.append(moment)
        moment = schedule.next_after(moment)
    return found


# --- the seed's reference table ------------------------------------------------------------------

#: Wednesday 6 January 2027, 10:07:30 UTC = 15:37:30 IST (Asia/Kolkata, UTC+5:30, no DST).
START = datetime(2027, 1, 6, 10, 7, 30, tzinfo=UTC)

#: expression -> (next two firings in UTC, next two firings in Asia/Kolkata), all as UTC instants.
REFERENCE_TABLE = {
    # Every minute: the same instants in every zone.
    "* * * * *": ([utc(2027, 1, 6, 10, 8), utc(2027, 1, 6, 10, 9)],) * 2,
    # Every hour: 11:00, 12:00 UTC; in Kolkata 16:00, 17:00 IST = 10:30, 11:30 UTC.
    "0 * * * *": (
        [utc(2027, 1, 6, 11), utc(2027, 1, 6, 12)],
        [utc(2027, 1, 6, 10, 30), utc(2027, 1, 6, 11, 30)],
    ),
    # 09:00 daily: today's is past, so Thu 7 and Fri 8; 09:00 IST = 03:30 UTC.
    "0 9 * * *": (
        [utc(2027, 1, 7, 9), utc(2027, 1, 8, 9)],
        [utc(2027, 1, 7, 3, 30), utc(2027, 1, 8, 3, 30)],
    ),
    # Mondays 09:00: 11 and 18 January.
    "0 9 * * 1": (
        [utc(2027, 1, 11, 9), utc(2027, 1, 18, 9)],
        [utc(2027, 1, 11, 3, 30), utc(2027, 1, 18, 3, 30)],
    ),
    # Midnight on the 1st: 1 Feb, 1 Mar; 00:00 IST is 18:30 UTC the day before.
    "0 0 1 * *": (
        [utc(2027, 2, 1), utc(2027, 3, 1)],
        [utc(2027, 1, 31, 18, 30), utc(2027, 2, 28, 18, 30)],
    ),
    # Weekdays 17:00: today (Wed) and Thu; 17:00 IST = 11:30 UTC.
    "0 17 * * 1-5": (
        [utc(2027, 1, 6, 17), utc(2027, 1, 7, 17)],
        [utc(2027, 1, 6, 11, 30), utc(2027, 1, 7, 11, 30)],
    ),
    # Every 15 minutes: :15 and :30 (IST is offset by 5:30, a multiple of 15 minutes).
    "*/15 * * * *": ([utc(2027, 1, 6, 10, 15), utc(2027, 1, 6, 10, 30)],) * 2,
    # Sunday midnight: 10 and 17 January; 00:00 IST Sunday = 18:30 UTC Saturday.
    "0 0 * * 0": (
        [utc(2027, 1, 10), utc(2027, 1, 17)],
        [utc(2027, 1, 9, 18, 30), utc(2027, 1, 16, 18, 30)],
    ),
}


@pytest.mark.parametrize("expression", REFERENCE_TABLE)
def test_every_reference_expression_fires_at_the_hand_computed_instants_in_utc(expression: str) -> None:
    expected, _ = REFERENCE_TABLE[expression]
    assert firings(parse_schedule(expression), START, 2) == expected


@pytest.mark.parametrize("expression", REFERENCE_TABLE)
def test_every_reference_expression_fires_at_the_hand_computed_instants_in_kolkata(expression: str) -> None:
    _, expected = REFERENCE_TABLE[expression]
    assert firings(parse_schedule(expression, "Asia/Kolkata"), START, 2) == expected


def test_sunday_midnight_in_new_york_is_the_right_utc_instant_on_either_side_of_dst() -> None:
    schedule = parse_schedule("0 0 * * 0", "America/New_York")
    wednesday = datetime(2027, 3, 10, 12, 0, tzinfo=NEW_YORK)  # 12:00 EST
    # Sun 14 March 00:00 is still EST (DST starts at 02:00 that day): 00:00 + 5 h = 05:00 UTC.
    # Sun 21 March 00:00 is EDT: 00:00 + 4 h = 04:00 UTC.
    assert firings(schedule, wednesday, 2) == [utc(2027, 3, 14, 5), utc(2027, 3, 21, 4)]


# --- instants: strictly after, any zone in, UTC out ----------------------------------------------


def test_a_moment_exactly_on_a_firing_gets_the_following_one() -> None:
    schedule = parse_schedule("0 9 * * *")
    assert schedule.next_after(utc(2027, 1, 6, 9)) == utc(2027, 1, 7, 9)
    assert schedule.next_after(utc(2027, 1, 6, 9) + timedelta(microseconds=1)) == utc(2027, 1, 7, 9)
    assert schedule.next_after(utc(2027, 1, 6, 9) - timedelta(microseconds=1)) == utc(2027, 1, 6, 9)


def test_the_moment_may_be_in_any_zone_and_the_answer_is_always_utc() -> None:
    schedule = parse_schedule("0 9 * * *", "America/New_York")
    in_tokyo = START.astimezone(ZoneInfo("Asia/Tokyo"))
    answer = schedule.next_after(in_tokyo)
    assert answer == schedule.next_after(START) == utc(2027, 1, 6, 14)  # 09:00 EST
    assert answer.tzinfo is UTC


def test_a_nonexistent_wall_time_given_as_the_moment_is_read_as_its_real_instant() -> None:
    schedule = parse_schedule("0 3 * * *", "America/New_York")
    # 02:30 on 14 March 2027 does not exist in New York; zoneinfo reads it as 02:30 EST = 07:30 UTC,
    # which is 03:30 EDT: today's 03:00 EDT (07:00 UTC) has passed.
    imaginary = datetime(2027, 3, 14, 2, 30, tzinfo=NEW_YORK)
    assert schedule.next_after(imaginary) == utc(2027, 3, 15, 7)


# --- daylight saving: spring forward ---------------------------------------------------------------


def test_a_time_in_the_new_york_spring_forward_gap_runs_once_right_after_the_gap() -> None:
    schedule = parse_schedule("30 2 * * *", "America/New_York")
    saturday_noon = datetime(2027, 3, 13, 12, 0, tzinfo=NEW_YORK)
    # 02:30 does not exist on 14 March: it runs at 03:00 EDT = 07:00 UTC; then 02:30 EDT = 06:30 UTC.
    assert firings(schedule, saturday_noon, 2) == [utc(2027, 3, 14, 7), utc(2027, 3, 15, 6, 30)]


def test_a_time_in_the_paris_spring_forward_gap_runs_once_right_after_the_gap() -> None:
    schedule = parse_schedule("30 2 * * *", "Europe/Paris")
    saturday_noon = datetime(2027, 3, 27, 12, 0, tzinfo=PARIS)
    # 02:30 does not exist on 28 March: 03:00 CEST = 01:00 UTC; then 02:30 CEST = 00:30 UTC.
    assert firings(schedule, saturday_noon, 2) == [utc(2027, 3, 28, 1), utc(2027, 3, 29, 0, 30)]


def test_several_fixed_times_in_one_gap_collapse_into_one_firing_after_it() -> None:
    schedule = parse_schedule("0,20,40 2 * * *", "America/New_York")
    night = firings_between(schedule, utc(2027, 3, 14, 0), utc(2027, 3, 15, 0))
    assert night == [utc(2027, 3, 14, 7)]  # 03:00 EDT


def test_an_hourly_schedule_skips_the_hour_that_spring_forward_removes() -> None:
    schedule = parse_schedule("30 * * * *", "America/New_York")
    # From 00:00 EST (05:00 UTC) to 04:00 EDT (08:00 UTC): 00:30 EST, 01:30 EST, 03:30 EDT.
    night = firings_between(schedule, utc(2027, 3, 14, 5), utc(2027, 3, 14, 8))
    assert night == [utc(2027, 3, 14, 5, 30), utc(2027, 3, 14, 6, 30), utc(2027, 3, 14, 7, 30)]


def test_an_every_minute_schedule_inside_the_missing_hour_does_not_run_that_day() -> None:
    # Minute field starts with `*`: scheduled normally, and 02:00-02:59 does not exist on 14 March.
    schedule = parse_schedule("* 2 * * *", "America/New_York")
    assert schedule.next_after(utc(2027, 3, 14, 5)) == utc(2027, 3, 15, 6)  # 15 March 02:00 EDT


# --- daylight saving: fall back ------------------------------------------------------------------


def test_a_time_in_the_repeated_new_york_hour_runs_once_in_its_first_copy() -> None:
    schedule = parse_schedule("30 1 * * *", "America/New_York")
    saturday_noon = datetime(2027, 11, 6, 12, 0, tzinfo=NEW_YORK)
    monday = datetime(2027, 11, 8, 0, 0, tzinfo=NEW_YORK)
    # Only the first 01:30 (EDT, UTC-4) = 05:30 UTC; the second (EST) = 06:30 UTC does not run.
    assert firings_between(schedule, saturday_noon, monday) == [utc(2027, 11, 7, 5, 30)]
    # The next night is EST: 01:30 + 5 h = 06:30 UTC.
    assert schedule.next_after(utc(2027, 11, 7, 5, 30)) == utc(2027, 11, 8, 6, 30)


def test_a_time_in_the_repeated_paris_hour_runs_once_in_its_first_copy() -> None:
    schedule = parse_schedule("30 2 * * *", "Europe/Paris")
    saturday_noon = datetime(2027, 10, 30, 12, 0, tzinfo=PARIS)
    monday = datetime(2027, 11, 1, 0, 0, tzinfo=PARIS)
    # Only the first 02:30 (CEST, UTC+2) = 00:30 UTC; the second (CET) = 01:30 UTC does not run.
    assert firings_between(schedule, saturday_noon, monday) == [utc(2027, 10, 31, 0, 30)]
    # The next night is CET: 02:30 - 1 h = 01:30 UTC.
    assert schedule.next_after(utc(2027, 10, 31, 0, 30)) == utc(2027, 11, 1, 1, 30)


def test_from_the_second_copy_of_the_repeated_hour_the_answer_is_still_in_the_future() -> None:
    # cronsim alone answers 01:30 EDT (05:30 UTC) from 01:10 EST (06:10 UTC): already past.
    new_york = parse_schedule("30 1 * * *", "America/New_York")
    second_copy = datetime(2027, 11, 7, 1, 10, fold=1, tzinfo=NEW_YORK)
    assert second_copy.astimezone(UTC) == utc(2027, 11, 7, 6, 10)  # `==` across zones is False in a fold
    assert new_york.next_after(second_copy) == utc(2027, 11, 8, 6, 30)
    # The same with several times in the hour, and in Paris (02:10 CET = 01:10 UTC).
    assert parse_schedule("0,30 1 * * *", "America/New_York").next_after(second_copy) == utc(2027, 11, 8, 6)
    paris = parse_schedule("30 2 * * *", "Europe/Paris")
    assert paris.next_after(utc(2027, 10, 31, 1, 10)) == utc(2027, 11, 1, 1, 30)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # 00:30 EDT, 01:30 EDT, 01:30 EST, 02:30 EST
        ("30 * * * *", [utc(2027, 11, 7, 4, 30), utc(2027, 11, 7, 5, 30), utc(2027, 11, 7, 6, 30)]),
        # 01:00 EDT, 01:00 EST, 02:00 EST
        ("0 * * * *", [utc(2027, 11, 7, 5), utc(2027, 11, 7, 6), utc(2027, 11, 7, 7)]),
    ],
)
def test_a_wildcard_hour_schedule_runs_in_both_copies_of_the_repeated_hour(
    expression: str, expected: list[datetime]
) -> None:
    schedule = parse_schedule(expression, "America/New_York")
    midnight_edt = utc(2027, 11, 7, 4)
    assert firings(schedule, midnight_edt, 3) == expected


# --- downtime ------------------------------------------------------------------------------------


def test_after_downtime_the_documented_recipe_fires_a_missed_schedule_once() -> None:
    schedule = parse_schedule("*/15 * * * *")
    next_run_at = utc(2027, 1, 6, 10, 15)
    now = utc(2027, 1, 9, 8, 4)  # the scheduler was down for three days: ~270 slots missed
    fired = 0
    for _ in range(3):  # three scheduler ticks at the same "now"
        if next_run_at <= now:
            fired += 1
            next_run_at = schedule.next_after(now)
    assert fired == 1
    assert next_run_at == utc(2027, 1, 9, 8, 15)


# --- syntax --------------------------------------------------------------------------------------


def same_firings(first: str, second: str, timezone: str = "UTC") -> bool:
    start = utc(2027, 1, 1)
    return firings(parse_schedule(first, timezone), start, 40) == firings(
        parse_schedule(second, timezone), start, 40
    )


def test_day_of_week_7_is_sunday_like_0() -> None:
    assert same_firings("0 0 * * 7", "0 0 * * 0")
    assert same_firings("0 0 * * 5-7", "0 0 * * 0,5,6")
    assert parse_schedule("0 0 * * 7").next_after(START) == utc(2027, 1, 10)  # a Sunday


def test_month_and_weekday_names_mean_their_numbers_in_any_case() -> None:
    assert same_firings("0 9 * jan,jul MON", "0 9 * 1,7 1")
    assert same_firings("0 17 * * Mon-Fri", "0 17 * * 1-5")
    assert same_firings("0 0 1 JAN-mar *", "0 0 1 1-3 *")
    assert same_firings("0 0 * * sun", "0 0 * * 0")
    assert same_firings("0 0 * * SAT", "0 0 * * 6")


def test_steps_apply_to_ranges_and_to_the_whole_field() -> None:
    minutes = [moment.minute for moment in firings(parse_schedule("1-30/5 * * * *"), utc(2027, 1, 1), 7)]
    assert minutes == [1, 6, 11, 16, 21, 26, 1]
    hours = [moment.hour for moment in firings(parse_schedule("0 */6 * * *"), utc(2027, 1, 1), 5)]
    assert hours == [6, 12, 18, 0, 6]


@pytest.mark.parametrize(
    ("alias", "expanded"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@Daily", "0 0 * * *"),
    ],
)
def test_an_alias_fires_like_its_five_field_form(alias: str, expanded: str) -> None:
    assert same_firings(alias, expanded, "Europe/Paris")
    assert parse_schedule(alias).expression == alias


def test_when_both_day_fields_are_restricted_either_one_matching_fires() -> None:
    schedule = parse_schedule("0 0 13 * 5")
    # January 2027: Fridays 8, 15, 22, 29 and Wednesday the 13th.
    assert firings(schedule, utc(2027, 1, 1), 5) == [
        utc(2027, 1, 8),
        utc(2027, 1, 13),
        utc(2027, 1, 15),
        utc(2027, 1, 22),
        utc(2027, 1, 29),
    ]


def test_when_a_day_field_starts_with_a_star_both_must_match() -> None:
    # Odd days that are Fridays (Vixie cron: `*/2` counts as a star). 1 Jan is excluded: it is the start.
    schedule = parse_schedule("0 0 */2 * 5")
    assert firings(schedule, utc(2027, 1, 1), 2) == [utc(2027, 1, 15), utc(2027, 1, 29)]


def test_whitespace_is_normalised_and_the_timezone_defaults_to_utc() -> None:
    schedule = parse_schedule("  0   9 *\t* *  ")
    assert schedule.expression == "0 9 * * *"
    assert schedule.timezone == "UTC"
    assert parse_schedule("0 9 * * *", None).timezone == "UTC"
    assert schedule == CronSchedule("0 9 * * *", "UTC")


def test_parsed_schedules_are_cached_for_a_whole_scheduler_tick() -> None:
    assert parse_schedule("0 9 * * *", "Europe/Paris") is parse_schedule("0 9 * * *", "Europe/Paris")
    assert PARSE_CACHE_SIZE >= 10_000


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("61 * * * *", "'61 * * * *'"),
        ("* * *", "'* * *'"),
        ("* * * * * *", "'* * * * * *'"),
        ("@reboot", "'@reboot'"),
        ("@fortnightly", "'@fortnightly'"),
        ("", "''"),
        ("   ", "'   '"),
        (None, "None"),
        (15, "15"),
        ("0 9 * * MON-FUNDAY", "'0 9 * * MON-FUNDAY'"),
        ("0 0 30 2 *", "'0 0 30 2 *'"),
        ("5-1 * * * *", "'5-1 * * * *'"),
        ("*/0 * * * *", "'*/0 * * * *'"),
        ("1,,2 * * * *", "'1,,2 * * * *'"),
        ("0 0 L * *", "'0 0 L * *'"),
        ("0 0 LW * *", "'0 0 LW * *'"),
        ("0 0 15W * *", "'0 0 15W * *'"),
        ("0 0 * * 5L", "'0 0 * * 5L'"),
        ("0 0 * * MON#2", "'0 0 * * MON#2'"),
        ("0 0 ? * *", "'0 0 ? * *'"),
    ],
)
def test_a_bad_expression_is_an_invalid_cron_expression_naming_it(expression: object, named: str) -> None:
    with pytest.raises(InvalidCronExpression) as caught:
        parse_schedule(expression)  # type: ignore[arg-type]
    assert str(caught.value).startswith(f"cron expression {named} is invalid: ")
    assert isinstance(caught.value, AgentQueueError)
    assert isinstance(caught.value, ValueError)


def test_the_reason_says_what_is_wrong() -> None:
    def reason(expression: str) -> str:
        with pytest.raises(InvalidCronExpression) as caught:
            parse_schedule(expression)
        return caught.value.reason

    assert reason("61 * * * *") == "bad minute field '61' (values 0-59; ranges low-high; steps from 1)"
    assert "6 fields" in reason("* * * * * *")
    assert "seconds are not supported" in reason("* * * * * *")
    assert "'MON-FUNDAY'" in reason("0 9 * * MON-FUNDAY")
    assert "Quartz-style extension" in reason("0 0 L * *")
    assert reason("") == "is empty"


@pytest.mark.parametrize(
    "timezone", ["Mars/Olympus", "", "america/new_york", "America", "../etc/passwd", "localtime"]
)
def test_a_bad_time_zone_is_an_unknown_timezone_naming_it(timezone: str) -> None:
    with pytest.raises(UnknownTimezone) as caught:
        parse_schedule("0 9 * * *", timezone)
    assert str(caught.value).startswith(f"time zone {timezone!r} is not an IANA time zone")
    assert isinstance(caught.value, AgentQueueError)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("timezone", [None, 5])
def test_a_time_zone_that_is_not_a_string_is_an_unknown_timezone(timezone: object) -> None:
    # parse_schedule reads None as "UTC"; a CronSchedule built directly needs a real name.
    with pytest.raises(UnknownTimezone, match=f"time zone {timezone!r} is not an IANA time zone"):
        CronSchedule("0 9 * * *", timezone)  # type: ignore[arg-type]
    if timezone is not None:
        with pytest.raises(UnknownTimezone, match=f"time zone {timezone!r}"):
            parse_schedule("0 9 * * *", timezone)  # type: ignore[arg-type]


def test_a_schedule_built_directly_is_validated_too() -> None:
    with pytest.raises(InvalidCronExpression, match="'61 \\* \\* \\* \\*'"):
        CronSchedule("61 * * * *")


def test_a_naive_moment_is_refused() -> None:
    with pytest.raises(NaiveMoment, match=r"datetime\.datetime\(2027, 1, 6, 9, 0\)"):
        parse_schedule("0 9 * * *").next_after(datetime(2027, 1, 6, 9, 0))  # noqa: DTZ001


def test_a_schedule_with_no_firing_left_says_so() -> None:
    with pytest.raises(NoFiringAfter, match="'@yearly' in 'UTC' has no firing after 9999-12-31"):
        parse_schedule("@yearly").next_after(utc(9999, 12, 31, 23, 59))


# --- cost ----------------------------------------------------------------------------------------


@pytest.mark.benchmark
def test_benchmark_ten_thousand_schedules_in_one_tick(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the cost of one scheduler tick over 10,000 schedules; asserts the answers, not the time."""
    shapes = ["{m} {h} * * *", "{m} {h} * * 1-5", "{m} * * * *", "*/15 * * * *", "{m} {h} 1 * *"]
    zones = ["UTC", "America/New_York", "Europe/Paris", "Asia/Kolkata", "Australia/Sydney"]
    pairs = [
        (shapes[i % len(shapes)].format(m=i % 60, h=i // 60 % 24), zones[i // len(shapes) % len(zones)])
        for i in range(10_000)
    ]
    now = utc(2027, 1, 6, 10, 7)

    began = time.perf_counter()
    parsed = [parse_schedule(expression, zone) for expression, zone in pairs]
    cold = time.perf_counter() - began
    began = time.perf_counter()
    schedules = [parse_schedule(expression, zone) for expression, zone in pairs]
    warm = time.perf_counter() - began
    began = time.perf_counter()
    firings = [schedule.next_after(now) for schedule in schedules]
    evaluated = time.perf_counter() - began

    # The second parse came from the cache; every schedule fires within its longest period (a month)
    assert all(cached is first for cached, first in zip(schedules, parsed, strict=True))
    assert all(now < firing <= now + timedelta(days=31) for firing in firings)

    with capsys.disabled():
        print(
            f"\n10,000 schedules ({len(set(pairs))} distinct): parse_schedule first {cold * 1000:.0f} ms, "
            f"cached {warm * 1000:.1f} ms; next_after {evaluated * 1000:.0f} ms "
            f"({evaluated / 10_000 * 1e6:.1f} us per call)"
        )
