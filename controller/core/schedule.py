"""How many tasks an agent should run at an instant: ``spec.suspend`` and ``spec.schedules``.

Design
------
Level-based, like everything the reconciler does: the desired count at instant ``t`` is a pure
function of ``(spec, t)``, never of what happened before.

- ``spec.suspend: true`` -> 0, whatever the schedules say.
- Otherwise the schedule that fired **most recently at or before** ``t`` wins: its ``replicas``.
  Two schedules firing at the same instant: the one later in the list wins. No schedule has
  fired yet (an ``at()`` in the future): ``spec.replicas`` (1).
- A schedule's firing instants (:mod:`oab.controller.api.schedule` has the grammar):
  ``cron(...)`` at each local wall time it selects in its time zone; ``rate(N unit)`` at every
  multiple of the period since the Unix epoch; ``at(...)`` once.
- Daylight saving time, as EventBridge Scheduler documents it: a local time the clocks spring
  forward over does not exist and is **skipped** (a ``cron(30 2 * * ? *)`` in America/New_York
  does not fire on the spring-forward day); a local time the clocks fall back over exists twice
  and fires **once**, at its first occurrence.

A *transition* is a firing instant at which the desired count changes. :func:`next_transition`
finds the next one (the leader's scheduler enqueues a reconcile for it; ``oabctl describe``
shows it). Only schedules whose ``replicas`` differ from the level in force can cause one, so a
``rate(1 minute)`` that keeps re-asserting the current level costs nothing.

Invariants: pure (the instant is passed in; no clock, no I/O); bounded work: a cron search walks
at most the years 1970-2199, skipping unselected years and months whole, and
:func:`next_transition` gives up after :data:`MAX_TIES` same-level firings in a row.
Time model: instants are POSIX seconds (UTC); local wall times exist only inside the search.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

from oab.controller.api.schedule import (
    YEAR_MAX,
    YEAR_MIN,
    AtExpr,
    CronExpr,
    ParsedExpr,
    RateExpr,
    Schedule,
    local_instant,
)
from oab.controller.api.service import OABServiceSpec
from oab.controller.core.status import Condition, iso, set_condition

__all__ = [
    "MAX_TIES",
    "Entry",
    "Level",
    "Plan",
    "Transition",
    "evaluation_instant",
    "level_conditions",
    "next_fire",
    "previous_fire",
    "utc",
]

#: Firings in a row that leave the level unchanged before :func:`Plan.next_transition` stops
#: looking (only reachable with several schedules firing at the same instants).
MAX_TIES: Final = 64

Cause = Literal["default", "suspend", "schedule"]


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One schedule, parsed once: its label (name or ``schedules[i]``) and firing rule."""

    label: str
    expr: str
    timezone: str
    replicas: int
    parsed: ParsedExpr
    zone: ZoneInfo

    def describe(self) -> str:
        """``night (cron(0 22 ? * MON-FRI *), Europe/Berlin)``."""
        return f"{self.label} ({self.expr}, {self.timezone})"


@dataclass(frozen=True, kw_only=True)
class Transition:
    """A firing instant of ``entry`` (POSIX seconds) setting the count to ``replicas``."""

    at: float
    replicas: int
    entry: Entry

    def describe(self) -> str:
        """``replicas 0 at 2027-03-14T07:00:00Z by schedule night (...)``."""
        return f"replicas {self.replicas} at {iso(self.at)} by schedule {self.entry.describe()}"


@dataclass(frozen=True, kw_only=True)
class Level:
    """The desired count at one instant and why."""

    replicas: int
    cause: Cause
    #: The firing in force when ``cause`` is ``"schedule"``.
    since: Transition | None = None

    def describe(self) -> str:
        """Why the count is what it is, for conditions and audit rows."""
        if self.cause == "suspend":
            return "suspended by spec.suspend"
        if self.since is not None:
            return f"schedule {self.since.entry.describe()} set replicas {self.replicas} at " + iso(
                self.since.at
            )
        return f"replicas {self.replicas} from spec (no schedule has fired)"


# ------------------------------------------------------------------------------------ firings
def _weekday(day: date) -> int:
    """EventBridge's day-of-week number: 1 = Sunday ... 7 = Saturday."""
    return (day.weekday() + 1) % 7 + 1


def _days(cron: CronExpr, year: int, month: int) -> list[int]:
    last = calendar.monthrange(year, month)[1]
    if cron.days_of_month is not None:
        days = {d for d in cron.days_of_month if d <= last}
        if cron.last_day:
            days.add(last)
        return sorted(days)
    assert cron.days_of_week is not None  # the grammar: exactly one day field is "?"
    out = []
    for d in range(1, last + 1):
        weekday = _weekday(date(year, month, d))
        if weekday in cron.days_of_week or (weekday, (d - 1) // 7 + 1) in cron.nth_weekdays:
            out.append(d)
    return out


def _local_days(cron: CronExpr, start: date, *, forward: bool) -> Iterator[date]:
    """Selected local dates from ``start`` (inclusive), ascending or descending."""
    years = sorted(cron.years, reverse=not forward)
    months = sorted(cron.months, reverse=not forward)
    for year in years:
        if (forward and year < start.year) or (not forward and year > start.year):
            continue
        for month in months:
            if year == start.year and (
                (forward and month < start.month) or (not forward and month > start.month)
            ):
                continue
            days = _days(cron, year, month)
            for day in days if forward else reversed(days):
                candidate = date(year, month, day)
                if (forward and candidate >= start) or (not forward and candidate <= start):
                    yield candidate


def _cron_instants(cron: CronExpr, zone: ZoneInfo, t: float, *, forward: bool) -> Iterator[float]:
    """Firing instants of ``cron`` in ``zone`` from about ``t``, in order (DST: module doc)."""
    # Start a day early (late): a wall time near ``t`` may belong to the previous local date.
    local = datetime.fromtimestamp(t, zone).date()
    start = local - timedelta(days=1) if forward else local + timedelta(days=1)
    start = min(max(start, date(YEAR_MIN, 1, 1)), date(YEAR_MAX, 12, 31))
    times = sorted((h, m) for h in cron.hours for m in cron.minutes)
    if not forward:
        times.reverse()
    for day in _local_days(cron, start, forward=forward):
        for hour, minute in times:
            instant = local_instant(datetime(day.year, day.month, day.day, hour, minute), zone)
            if instant is not None:  # None: skipped by a spring-forward gap
                yield instant.timestamp()


def next_fire(entry: Entry, t: float) -> float | None:
    """The first firing of ``entry`` strictly after ``t``, or ``None`` (it never fires again)."""
    parsed = entry.parsed
    if isinstance(parsed, RateExpr):
        return float((math.floor(t / parsed.seconds) + 1) * parsed.seconds)
    if isinstance(parsed, AtExpr):
        instant = local_instant(parsed.local, entry.zone)
        return instant.timestamp() if instant is not None and instant.timestamp() > t else None
    return next((s for s in _cron_instants(parsed, entry.zone, t, forward=True) if s > t), None)


def previous_fire(entry: Entry, t: float) -> float | None:
    """The last firing of ``entry`` at or before ``t``, or ``None`` (it has not fired yet)."""
    parsed = entry.parsed
    if isinstance(parsed, RateExpr):
        return float(math.floor(t / parsed.seconds) * parsed.seconds)
    if isinstance(parsed, AtExpr):
        instant = local_instant(parsed.local, entry.zone)
        return instant.timestamp() if instant is not None and instant.timestamp() <= t else None
    return next((s for s in _cron_instants(parsed, entry.zone, t, forward=False) if s <= t), None)


# --------------------------------------------------------------------------------------- plan
def _entry(index: int, schedule: Schedule) -> Entry:
    return Entry(
        label=schedule.name or f"schedules[{index}]",
        expr=schedule.expr,
        timezone=schedule.timezone,
        replicas=schedule.replicas,
        parsed=schedule.parsed(),
        zone=schedule.zone(),
    )


@dataclass(frozen=True, kw_only=True)
class Plan:
    """An agent's suspend flag and parsed schedules: build once per manifest generation."""

    suspend: bool
    default: int
    entries: tuple[Entry, ...]

    @classmethod
    def of(cls, spec: OABServiceSpec) -> Plan:
        """The plan of ``spec`` (parses every expression once)."""
        schedules: Sequence[Schedule] = spec.schedules or ()
        return cls(
            suspend=bool(spec.suspend),
            default=spec.replicas,
            entries=tuple(_entry(i, s) for i, s in enumerate(schedules)),
        )

    @property
    def scheduled(self) -> bool:
        """Whether the count can change with time (schedules and no suspend)."""
        return bool(self.entries) and not self.suspend

    def level(self, t: float) -> Level:
        """The desired count at ``t`` (see the module doc)."""
        if self.suspend:
            return Level(replicas=0, cause="suspend")
        best: Transition | None = None
        for entry in self.entries:
            fired = previous_fire(entry, t)
            # ">=": at the same instant the later schedule in the list wins.
            if fired is not None and (best is None or fired >= best.at):
                best = Transition(at=fired, replicas=entry.replicas, entry=entry)
        if best is None:
            return Level(replicas=self.default, cause="default")
        return Level(replicas=best.replicas, cause="schedule", since=best)

    def next_transition(self, t: float) -> Transition | None:
        """The first instant after ``t`` at which :meth:`level` changes, or ``None``."""
        if not self.scheduled:
            return None
        current = self.level(t).replicas
        cursor = t
        for _ in range(MAX_TIES):
            candidates = [
                fire
                for entry in self.entries
                if entry.replicas != current
                for fire in (next_fire(entry, cursor),)
                if fire is not None
            ]
            if not candidates:
                return None
            at = min(candidates)
            after = self.level(at)
            if after.replicas != current and after.since is not None:
                return after.since
            cursor = at  # a same-instant firing of a later schedule kept the level
        return None


def level_conditions(
    conditions: Sequence[Condition],
    *,
    plan: Plan,
    level: Level,
    upcoming: Transition | None,
    running: int,
    now: str,
) -> tuple[tuple[Condition, ...], bool]:
    """Conditions of an agent whose desired count is ``level`` (phase ``Suspended`` when 0),
    and whether to requeue (tasks still draining). Pure.

    ``Scheduled`` (set while the plan has schedules) names the next transition: ``oabctl
    describe`` shows it, and the leader's scheduler reads only the manifests of agents that
    carry it (:mod:`oab.controller.runtime.schedules`).
    """
    conds = tuple(conditions)
    if plan.entries:
        conds = set_condition(
            conds,
            type="Scheduled",
            status="True",
            reason="NextTransition" if upcoming else "NoTransitionAhead",
            message=upcoming.describe() if upcoming else "no schedule changes the count again",
            now=now,
        )
    elif any(c.type == "Scheduled" for c in conds):
        conds = set_condition(
            conds, type="Scheduled", status="False", reason="NoSchedules", message="", now=now
        )
    if level.replicas != 0:
        if any(c.type == "Suspended" for c in conds):
            conds = set_condition(
                conds,
                type="Suspended",
                status="False",
                reason="Resumed",
                message=level.describe(),
                now=now,
            )
        return conds, False
    reason = "SuspendedBySpec" if level.cause == "suspend" else "SuspendedBySchedule"
    conds = set_condition(
        conds, type="Suspended", status="True", reason=reason, message=level.describe(), now=now
    )
    conds = set_condition(
        conds,
        type="Available",
        status="False",
        reason="Suspended",
        message="desired count is 0",
        now=now,
    )
    conds = set_condition(
        conds,
        type="Progressing",
        status="True" if running else "False",
        reason="ScalingDown" if running else "Suspended",
        message=f"{running} task(s) draining" if running else "no task runs while suspended",
        now=now,
    )
    conds = set_condition(
        conds, type="Degraded", status="False", reason="AsExpected", message="", now=now
    )
    return conds, running > 0


def utc(t: float) -> datetime:
    """POSIX seconds as an aware UTC datetime (tests and display)."""
    return datetime.fromtimestamp(t, tz=UTC)


def evaluation_instant(now: float, transition: float | None) -> float:
    """When a reconcile evaluates the level: ``now``, or the ``transition`` its unit was enqueued
    for (:attr:`oab.controller.core.outcome.Origin.at`) when that is later (this host's clock may
    trail the leader's by a little skew; the transition must not be read as "not yet" and then
    never enqueued again)."""
    return now if transition is None else max(now, transition)
