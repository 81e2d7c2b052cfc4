"""Cron jobs: expressions and time zones are checked as OpenAB's cron crate and chrono-tz read them.

``61 9 * * *`` and an unknown time zone used to render fine and then stop the agent at start-up.
The grammar cases below follow the Rust ``cron`` crate (0.16) OpenAB uses, with OpenAB's ``"0 "``
seconds prefix.
"""

from __future__ import annotations

from typing import Any

import pytest

from oab.controller.api import cronexpr
from oab.controller.api.cronexpr import CronError, check_timezone, parse_cron, timezones
from oab.controller.api.document import parse_document
from oab.controller.api.issues import InvalidDocument

CHANNEL = "123456789012345678"


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "0 9 * * 1-5",
        "0 9 * * MON-FRI",
        "0 9 * * mon,wed,fri",
        "*/15 * * * *",
        "5/15 * * * *",
        "0-30/10 8-18/2 * * *",
        "0 0 1 JAN,jul *",
        "0 9 * * 0",
        "0 0 * * 0-6/2",
        "0 0 ? * SUN",
        "0 0 1-31/2 February-November/2 *",
        "59 23 31 12 7",
        "0 12 * * Tues,THURS",
        "0  9  *  *  1",
        "0 0 ?/2 * *",
    ],
)
def test_expressions_openab_accepts(expr: str) -> None:
    parse_cron(expr)


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("61 9 * * *", "minute value 61 is out of range 0-59"),
        ("0 24 * * *", "hour value 24"),
        ("0 0 0 * *", "day-of-month value 0"),
        ("0 0 32 * *", "day-of-month value 32"),
        ("0 0 * 13 *", "month value 13"),
        ("0 9 * * 8", "day-of-week value 8 is out of range 0-7"),
        ("0 9 * * ?", "day-of-week item '?'"),
        ("0 9 * * 1,MON", "mixes numbers and names"),
        ("0 9 * * 5-1", "ends before it starts"),
        ("0 9 * *", "4 fields"),
        ("0 0 9 * * 1-5", "6 fields, not 5 (OpenAB would read a sixth field as the year)"),
        ("@daily", "shortcuts"),
        ("*/0 * * * *", "step 0"),
        ("*/60 * * * *", "minute step 60"),
        ("5-1 * * * *", "ends before it starts"),
        ("0 9 * * 3-THU", "mixes numbers and names"),
        ("0 9 * * MON/2", "mixes numbers and names"),
        ("0 9 * JAN/2 *", "a step needs"),
        ("0 9 * * FUNDAY", "day-of-week item 'FUNDAY'"),
        ("0 9 * JUNE-JAN *", "ends before it starts"),
        ("? 9 * * *", "'?' (any) is allowed only in the day fields"),
        ("0 9 L * *", "day-of-month item 'L'"),
        ("0 9 * * 5#3", "day-of-week item '5#3'"),
        ("0 9 1, * *", "empty list item"),
        ("0 9 * * 1-5\n", "single-line"),
        (" 0 9 * * *", "single-line"),
        ("0\t9 * * *", "single-line"),
        ("0 9 * * \u0661", "day-of-week item"),  # a non-ASCII digit
        ("9" * 300, "longer than 256"),
        ("99999999999 * * * *", "minute item"),
    ],
)
def test_expressions_openab_refuses(expr: str, says: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expr)
    assert says in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize(
    ("posix", "crate"),
    [
        # OpenAB's translate_posix_dow_field (cron.rs @1f3daf2): POSIX numbers, 0 and 7 = Sunday,
        # shifted into the crate's 1 = Sunday numbering; names are the crate's own.
        ("1-5", {2, 3, 4, 5, 6}),
        ("MON-FRI", {2, 3, 4, 5, 6}),
        ("0", {1}),
        ("7", {1}),
        ("SUN", {1}),
        ("6,7", {7, 1}),
        ("*/2", {1, 3, 5, 7}),
        ("1/2", {2, 4, 6}),
        ("0-7", set(range(1, 8))),
    ],
)
def test_day_of_week_numbers_are_posix(posix: str, crate: set[int]) -> None:
    assert parse_cron(f"0 9 * * {posix}").days_of_week == crate


def test_parsed_sets_follow_the_crate() -> None:
    expr = parse_cron("5/20 8-10 ? JAN-MAR/2 MON-FRI")
    assert expr.minutes == {5, 25, 45}
    assert expr.hours == {8, 9, 10}
    assert expr.days_of_month == frozenset(range(1, 32))
    assert expr.months == {1, 3}
    assert expr.days_of_week == {2, 3, 4, 5, 6}  # 1 = Sunday
    assert len(cronexpr.FIELDS) == 5


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Berlin", "Asia/Taipei", "America/New_York", "Etc/GMT+5"]
)
def test_iana_time_zones_accepted(zone: str) -> None:
    assert check_timezone(zone) == zone


@pytest.mark.parametrize(
    ("zone", "hint"),
    [
        ("Mars/Olympus", "IANA"),
        ("europe/berlin", "case-sensitive: write Europe/Berlin"),
        ("Europe/Berlin\n", "IANA"),
        ("../../etc/passwd", "IANA"),
        ("Factory", "IANA"),
        ("", "IANA"),
    ],
)
def test_unknown_time_zones_refused(zone: str, hint: str) -> None:
    with pytest.raises(CronError) as info:
        check_timezone(zone)
    assert hint in info.value.hint


def test_zone_list_comes_from_the_tzdata_package() -> None:
    zones = timezones()
    assert len(zones) > 400
    assert {"UTC", "Europe/Berlin", "US/Eastern"} <= zones


def _doc(**job: Any) -> dict[str, Any]:
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": "bot", "namespace": "team"},
        "spec": {
            "cpu": 256,
            "memory": 512,
            "taskDefinition": {"image": "ghcr.io/openabdev/openab:stable-kiro"},
            "secrets": [
                {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/team/bot/token"}
            ],
            "config": {
                "agent": {"preset": "kiro"},
                "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
                "cron": {
                    "jobs": [
                        {"schedule": "0 9 * * MON-FRI", "channel": CHANNEL, "message": "hi", **job}
                    ]
                },
            },
        },
    }


def _issues(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidDocument) as info:
        parse_document(doc)
    return {issue.dotted: str(issue) for issue in info.value.issues}


def test_manifest_cron_jobs_are_checked_with_field_paths() -> None:
    parse_document(_doc(timezone="Europe/Berlin"))
    found = _issues(_doc(schedule="61 9 * * *"))
    assert "minute value 61" in found["spec.config.cron.jobs[0].schedule"]
    found = _issues(_doc(timezone="Mars/Olympus"))
    assert "not an IANA time zone" in found["spec.config.cron.jobs[0].timezone"]
