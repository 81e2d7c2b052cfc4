"""spec.suspend and spec.schedules at apply: upstream's expression forms, refused parts, zones."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from oab.controller.api.document import parse_document
from oab.controller.api.issues import InvalidDocument
from oab.controller.api.schedule import (
    MAX_SCHEDULES,
    AtExpr,
    CronExpr,
    RateExpr,
    ScheduleError,
    parse_expr,
)
from oab.controller.api.service import OABService
from oab.controller.testing import agent_manifest


def _doc(**spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(agent_manifest())
    doc["spec"].update(spec)
    return doc


def _issues(**spec: Any) -> list[tuple[str, str, str]]:
    with pytest.raises(InvalidDocument) as info:
        parse_document(_doc(**spec))
    return [(".".join(str(p) for p in i.path), i.message, i.hint or "") for i in info.value.issues]


def test_a_manifest_without_them_is_unchanged_and_one_with_them_round_trips() -> None:
    plain = parse_document(_doc())
    assert isinstance(plain, OABService)
    assert "suspend" not in plain.to_manifest()["spec"]
    assert "schedules" not in plain.to_manifest()["spec"]
    schedules = [
        {"name": "night", "expr": "cron(0 22 ? * MON-FRI *)", "timezone": "Europe/Berlin",
         "replicas": 0},
        {"expr": "rate(1 hour)", "replicas": 1},
    ]  # fmt: skip
    obj = parse_document(_doc(suspend=True, schedules=schedules))
    assert isinstance(obj, OABService)
    spec = obj.to_manifest()["spec"]
    assert spec["suspend"] is True
    assert spec["schedules"][1] == {"expr": "rate(1 hour)", "timezone": "UTC", "replicas": 1}


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("cron(0 8 * * ? *)", CronExpr),
        ("cron(0/15 8-17 ? * MON-FRI *)", CronExpr),
        ("cron(30 2 L * ? 2027-2030)", CronExpr),
        ("cron(0 9 ? JAN,JUL 6#1 *)", CronExpr),
        ("cron(5,35 */2 1-15/2 * ? *)", CronExpr),
        ("rate(1 minute)", RateExpr),
        ("rate(5 minutes)", RateExpr),
        ("rate(12 hours)", RateExpr),
        ("rate(1 day)", RateExpr),
        ("at(2027-01-01T09:00:00)", AtExpr),
    ],
)
def test_upstream_forms_are_accepted(text: str, kind: type) -> None:
    assert isinstance(parse_expr(text), kind)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("cron(0 8 * * *)", "not 6"),
        ("cron(0 8 * * * *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 8 ? * ? *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 8 15W * ? *)", "W (nearest weekday) is not supported"),
        ("cron(0 8 LW * ? *)", "W (nearest weekday) is not supported"),
        ("cron(0 8 L-2 * ? *)", "only a lone L"),
        ("cron(0 8 ? * 6L *)", "L (last weekday of the month) is not supported"),
        ("cron(0 8 ? * 2#6 *)", "N in D#N must be 1-5"),
        ("cron(0 8 1#2 * ? *)", "# is allowed only in day-of-week"),
        ("cron(60 8 * * ? *)", "minute value 60 is out of range 0-59"),
        ("cron(0 8 ? * 0 *)", "1 = SUN"),
        ("cron(0 8 * * ? 1969)", "year value 1969"),
        ("cron(0 ? * * ? *)", "'?' is allowed only in the day fields"),
        ("cron(0 8 * FOO ? *)", "not a number 1-12 or a month name"),
        ("rate(1 hours)", "singular for 1"),
        ("rate(2 hour)", "singular for 1"),
        ("rate(0 minutes)", "not 1-1000"),
        ("rate(5 weeks)", "not minute(s), hour(s) or day(s)"),
        ("at(2027-02-30T09:00:00)", "not a valid date"),
        ("at(2027-01-01 09:00:00)", "at(yyyy-mm-ddThh:mm:ss)"),
        ("every(5 minutes)", "is not cron(...), rate(...) or at(...)"),
        ("cron(0 8 * * ? *", "does not end with ')'"),
        ("cron(" + "1," * 200 + "2 8 * * ? *)", "longer than 256"),
    ],
)
def test_refused_parts_say_what_and_why(text: str, says: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_expr(text)
    assert says in info.value.message


def test_issues_name_the_field_path_and_the_fix() -> None:
    issues = _issues(
        schedules=[
            {"expr": "cron(0 8 1W * ? *)", "replicas": 0},
            {"expr": "rate(1 hour)", "timezone": "europe/berlin", "replicas": 1},
            {"expr": "rate(1 hour)", "replicas": 2},
            {"expr": "rate(1 hour)", "replicas": True},
        ]
    )
    paths = {path: (message, hint) for path, message, hint in issues}
    assert "W (nearest weekday)" in paths["spec.schedules.0.expr"][0]
    assert "cron(0 9 1-5 * ? *)" in paths["spec.schedules.0.expr"][1]
    assert paths["spec.schedules.1.timezone"][1].endswith("write Europe/Berlin")
    assert "spec.schedules.2.replicas" in paths
    assert "spec.schedules.3.replicas" in paths  # YAML true is not 1


def test_an_at_inside_a_spring_forward_gap_is_refused() -> None:
    issues = _issues(
        schedules=[
            {"expr": "at(2027-03-14T02:30:00)", "timezone": "America/New_York", "replicas": 0}
        ]
    )
    assert issues[0][0] == "spec.schedules.0.expr"
    assert "does not exist in America/New_York" in issues[0][1]
    # The same wall time is fine where the clocks do not change that night.
    parse_document(
        _doc(schedules=[{"expr": "at(2027-03-14T02:30:00)", "timezone": "UTC", "replicas": 0}])
    )


def test_the_list_is_bounded_and_names_are_unique() -> None:
    many = [{"expr": "rate(1 hour)", "replicas": 1}] * (MAX_SCHEDULES + 1)
    assert _issues(schedules=many)[0][0] == "spec.schedules"
    twice = [{"name": "a", "expr": "rate(1 hour)", "replicas": 1}] * 2
    path, message, _hint = _issues(schedules=twice)[0]
    assert (path, message) == ("spec.schedules.1.name", "schedule name a is used twice")


def test_suspend_is_a_strict_boolean() -> None:
    assert _issues(suspend="yes")[0][0] == "spec.suspend"
