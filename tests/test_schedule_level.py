"""core/schedule.py: the desired count as a pure function of (spec, instant), DST included."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from oab.controller.api.document import parse_document
from oab.controller.api.service import OABService, OABServiceSpec
from oab.controller.core.outcome import Cause, origin_of
from oab.controller.core.schedule import (
    Plan,
    evaluation_instant,
    next_fire,
    previous_fire,
)
from oab.controller.testing import agent_manifest

NY = ZoneInfo("America/New_York")


def _spec(schedules: list[dict[str, Any]], *, suspend: bool | None = None) -> OABServiceSpec:
    doc: dict[str, Any] = yaml.safe_load(agent_manifest())
    doc["spec"]["schedules"] = schedules
    if suspend is not None:
        doc["spec"]["suspend"] = suspend
    obj = parse_document(doc)
    assert isinstance(obj, OABService)
    return obj.spec


def _ts(*args: int, tz: ZoneInfo | None = None, fold: int = 0) -> float:
    return datetime(*args, tzinfo=tz or UTC, fold=fold).timestamp()  # type: ignore[misc]


def _fires(plan: Plan, start: float, count: int) -> list[datetime]:
    entry, out, t = plan.entries[0], [], start
    for _ in range(count):
        nxt = next_fire(entry, t)
        assert nxt is not None
        out.append(datetime.fromtimestamp(nxt, entry.zone))
        t = nxt
    return out


def test_spring_forward_skips_a_wall_time_that_does_not_exist() -> None:
    # 2027-03-14 02:00 EST -> 03:00 EDT in New York: there is no 02:30 that day.
    plan = Plan.of(
        _spec([{"expr": "cron(30 2 * * ? *)", "timezone": "America/New_York", "replicas": 0}])
    )
    days = [d.day for d in _fires(plan, _ts(2027, 3, 12, 12, tz=NY), 4)]
    assert days == [13, 15, 16, 17]
    # Looking back from the skipped day finds the day before's firing.
    prev = previous_fire(plan.entries[0], _ts(2027, 3, 14, 12, tz=NY))
    assert prev == _ts(2027, 3, 13, 2, 30, tz=NY)


def test_fall_back_fires_a_repeated_wall_time_once_at_its_first_occurrence() -> None:
    # 2027-11-07 02:00 EDT -> 01:00 EST: 01:30 happens twice; it fires at the first (EDT).
    plan = Plan.of(
        _spec([{"expr": "cron(30 1 * * ? *)", "timezone": "America/New_York", "replicas": 0}])
    )
    fires = _fires(plan, _ts(2027, 11, 6, 12, tz=NY), 3)
    assert [(f.day, f.utcoffset()) for f in fires] == [
        (7, datetime(2027, 11, 7, 1, 30, tzinfo=NY).utcoffset()),
        (8, datetime(2027, 11, 8, 1, 30, tzinfo=NY).utcoffset()),
        (9, datetime(2027, 11, 9, 1, 30, tzinfo=NY).utcoffset()),
    ]
    first = _ts(2027, 11, 7, 1, 30, tz=NY, fold=0)
    second = _ts(2027, 11, 7, 1, 30, tz=NY, fold=1)
    assert second - first == 3600
    # From between the two 01:30s, the next firing is the next day's, not the repeat.
    assert next_fire(plan.entries[0], first) == _ts(2027, 11, 8, 1, 30, tz=NY)
    assert previous_fire(plan.entries[0], second) == first


def test_the_most_recent_firing_wins_and_transitions_follow_the_schedules() -> None:
    plan = Plan.of(
        _spec(
            [
                {"name": "off", "expr": "cron(0 22 ? * MON-FRI *)", "replicas": 0},
                {"name": "on", "expr": "cron(0 6 ? * MON-FRI *)", "replicas": 1},
            ]
        )
    )
    friday_noon = _ts(2027, 1, 8, 12)
    level = plan.level(friday_noon)
    assert (level.replicas, level.cause) == (1, "schedule")
    assert level.since is not None
    assert level.since.entry.label == "on"
    nxt = plan.next_transition(friday_noon)
    assert nxt is not None
    assert (nxt.at, nxt.replicas) == (_ts(2027, 1, 8, 22), 0)
    # Over the weekend it stays off; Monday 06:00 turns it on.
    assert plan.level(_ts(2027, 1, 10, 12)).replicas == 0
    back = plan.next_transition(nxt.at)
    assert back is not None
    assert (back.at, back.entry.label) == (_ts(2027, 1, 11, 6), "on")


def test_a_schedule_that_repeats_the_current_level_is_no_transition() -> None:
    plan = Plan.of(
        _spec(
            [
                {"expr": "rate(1 minute)", "replicas": 1},
                {"expr": "at(2027-06-01T00:00:00)", "replicas": 0},
            ]
        )
    )
    t = _ts(2027, 5, 31, 23, 0)
    nxt = plan.next_transition(t)
    assert nxt is not None
    assert (nxt.at, nxt.replicas) == (_ts(2027, 6, 1), 0)
    # A tie: both fire at 2027-06-01T00:00:00; the later entry (the at) wins that instant, and
    # the rate brings the count back at the next minute.
    assert plan.level(_ts(2027, 6, 1)).replicas == 0
    after = plan.next_transition(_ts(2027, 6, 1))
    assert after is not None
    assert (after.at, after.replicas) == (_ts(2027, 6, 1, 0, 1), 1)


def test_rate_is_anchored_at_the_epoch_and_at_fires_once() -> None:
    plan = Plan.of(
        _spec(
            [
                {"expr": "rate(5 minutes)", "replicas": 0},
                {"expr": "at(2027-01-01T09:00:00)", "timezone": "Asia/Taipei", "replicas": 1},
            ]
        )
    )
    rate, at = plan.entries
    t = _ts(2027, 1, 1, 0, 7, 30)
    assert next_fire(rate, t) == _ts(2027, 1, 1, 0, 10)
    assert previous_fire(rate, t) == _ts(2027, 1, 1, 0, 5)
    taipei_nine = _ts(2027, 1, 1, 1)  # 09:00 at UTC+8
    assert next_fire(at, t - 3600 * 24) == taipei_nine
    assert next_fire(at, taipei_nine) is None
    assert previous_fire(at, taipei_nine - 1) is None
    assert previous_fire(at, taipei_nine) == taipei_nine


def test_suspend_overrides_every_schedule_and_no_schedule_means_the_spec() -> None:
    schedules = [{"expr": "rate(1 minute)", "replicas": 1}]
    suspended = Plan.of(_spec(schedules, suspend=True))
    level = suspended.level(_ts(2027, 1, 1))
    assert (level.replicas, level.cause) == (0, "suspend")
    assert suspended.next_transition(_ts(2027, 1, 1)) is None
    future = Plan.of(_spec([{"expr": "at(2099-01-01T00:00:00)", "replicas": 0}]))
    assert (future.level(_ts(2027, 1, 1)).replicas, future.level(_ts(2027, 1, 1)).cause) == (
        1,
        "default",
    )


def test_last_day_and_nth_weekday() -> None:
    last = Plan.of(_spec([{"expr": "cron(0 12 L * ? *)", "replicas": 0}]))
    days = [(d.month, d.day) for d in _fires(last, _ts(2028, 1, 15), 3)]
    assert days == [(1, 31), (2, 29), (3, 31)]  # 2028 is a leap year
    first_friday = Plan.of(_spec([{"expr": "cron(0 12 ? * 6#1 *)", "replicas": 0}]))
    fridays = [(d.month, d.day) for d in _fires(first_friday, _ts(2027, 1, 1), 3)]
    assert fridays == [(1, 1), (2, 5), (3, 5)]


def test_a_cron_limited_to_past_or_future_years_is_bounded() -> None:
    gone = Plan.of(_spec([{"expr": "cron(0 0 1 1 ? 1999)", "replicas": 0}]))
    assert next_fire(gone.entries[0], _ts(2027, 1, 1)) is None
    assert previous_fire(gone.entries[0], _ts(2027, 1, 1)) == _ts(1999, 1, 1)
    never = Plan.of(_spec([{"expr": "cron(0 0 31 2 ? *)", "replicas": 0}]))
    assert next_fire(never.entries[0], _ts(2027, 1, 1)) is None
    assert never.level(_ts(2027, 1, 1)).cause == "default"


def test_a_schedule_unit_is_evaluated_no_earlier_than_its_transition() -> None:
    at = _ts(2027, 3, 14, 7)
    origin = origin_of("schedule@2027-03-14T07:00:00Z", None)
    assert (origin.cause, origin.at) == (Cause.SCHEDULE, at)
    assert evaluation_instant(at - 2.5, origin.at) == at  # this host's clock trails the leader's
    assert evaluation_instant(at + 10, origin.at) == at + 10
    assert evaluation_instant(at - 2.5, origin_of("resync:drift", None).at) == at - 2.5
    assert evaluation_instant(at - 2.5, origin_of("schedule@garbage", None).at) == at - 2.5
