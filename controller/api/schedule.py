"""``spec.schedules``: when an agent runs, in upstream oabctl's expression forms.

Design
------
Upstream ``oabctl schedule create NAME 0|1 --expr ... --timezone ...`` creates an EventBridge
Scheduler schedule that calls ``ecs:UpdateService`` directly. Here a schedule is part of the
manifest, ``{expr, timezone, replicas, name?}``, and the controller evaluates it (see
:mod:`oab.controller.core.schedule` for the semantics). This module is the grammar: it parses and
validates every expression at apply, so a manifest the store accepts is one the controller can
evaluate forever, and it names the field and the fix when it cannot.

Expression forms (upstream's, EventBridge Scheduler's spelling)
    ``cron(min hour day-of-month month day-of-week year)``
        Six fields separated by spaces. Supported in every field: ``*``, ``N``, ``A-B``,
        ``,`` lists, ``/STEP`` after ``*``, ``N`` or ``A-B``. Ranges: minute 0-59, hour 0-23,
        day-of-month 1-31, month 1-12 or JAN-DEC, day-of-week 1-7 or SUN-SAT (**1 = Sunday**,
        EventBridge's numbering), year 1970-2199. ``?`` ("no value") is allowed in the two day
        fields and, as in EventBridge, exactly one of them must be ``?``. ``L`` alone in
        day-of-month is the last day of the month; ``D#N`` in day-of-week is the N-th (1-5)
        weekday D of the month. **Refused** with a clear error: ``W`` (nearest weekday),
        ``LW``, ``L-N`` and ``L`` in day-of-week, and names in ranges mixed with numbers.
    ``rate(N unit)``
        ``unit`` is ``minute(s)``, ``hour(s)`` or ``day(s)`` (singular exactly when ``N`` is 1,
        as EventBridge requires), ``1 <= N <= 1000``. Anchored at the Unix epoch (1970-01-01
        00:00:00 UTC) so every replica computes the same instants; the time zone is ignored.
    ``at(yyyy-mm-ddThh:mm:ss)``
        One instant, local to ``timezone``. A local time that does not exist (a daylight-saving
        gap) is refused; one that exists twice (the fall-back hour) means its first occurrence.

Time zones are IANA names, checked exactly against the ``tzdata`` package
(:func:`oab.controller.api.cronexpr.check_timezone`).

Invariants: pure (no clock, no I/O but reading the packaged zone list); bounded input (an
expression of at most :data:`MAX_EXPR` characters, at most :data:`MAX_SCHEDULES` schedules).
Time model: none here; instants are computed by :mod:`oab.controller.core.schedule`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from oab.controller.api.cronexpr import CronError, check_timezone
from oab.controller.base.errors import InvalidInput

__all__ = [
    "MAX_EXPR",
    "MAX_SCHEDULES",
    "AtExpr",
    "CronExpr",
    "ParsedExpr",
    "RateExpr",
    "Schedule",
    "ScheduleError",
    "Schedules",
    "local_instant",
    "parse_expr",
]

#: Longest expression accepted.
MAX_EXPR: Final = 256
#: Most schedules one agent may have (the leader evaluates each one per manifest generation).
MAX_SCHEDULES: Final = 16
#: Years a cron expression may name (EventBridge's range).
YEAR_MIN: Final = 1970
YEAR_MAX: Final = 2199
_MAX_RATE: Final = 1000

_HINT: Final = (
    "write cron(min hour day-of-month month day-of-week year) with exactly one of the day "
    "fields '?', e.g. cron(0 8 ? * MON-FRI *); rate(N minutes|hours|days), e.g. rate(1 hour); "
    "or at(yyyy-mm-ddThh:mm:ss), e.g. at(2027-01-01T09:00:00)"
)


class ScheduleError(InvalidInput):
    """An expression the controller cannot evaluate; ``hint`` says what to write instead."""

    reason = "InvalidSchedule"

    def __init__(self, message: str, *, hint: str = _HINT) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class CronExpr:
    """A parsed ``cron(...)``: the values each field selects.

    ``days_of_month`` is ``None`` when the field is ``?`` (then ``days_of_week`` decides), and
    ``days_of_week`` is ``None`` when that one is. ``last_day`` is ``L`` in day-of-month;
    ``nth_weekdays`` holds the ``(weekday, n)`` pairs of ``D#N`` items.
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None
    last_day: bool
    months: frozenset[int]
    days_of_week: frozenset[int] | None
    nth_weekdays: frozenset[tuple[int, int]]
    years: frozenset[int]


@dataclass(frozen=True)
class RateExpr:
    """A parsed ``rate(...)``: fires every ``seconds`` seconds since the Unix epoch."""

    seconds: int


@dataclass(frozen=True)
class AtExpr:
    """A parsed ``at(...)``: one naive local wall time (the schedule's zone makes it an instant)."""

    local: datetime


ParsedExpr = CronExpr | RateExpr | AtExpr


@dataclass(frozen=True)
class _Field:
    label: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is the value low + i


_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES)
_DOW = _Field("day-of-week", 1, 7, _DAY_NAMES)
_YEAR = _Field("year", YEAR_MIN, YEAR_MAX)

_NUMBER = re.compile(r"[0-9]{1,4}")
_NTH = re.compile(r"([0-9]|[A-Za-z]{3})#([0-9])")
_RATE = re.compile(r"([0-9]{1,4}) ([a-z]+)")
_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
_UNITS: Final = {"minute": 60, "hour": 3600, "day": 86400}


def _value(token: str, spec: _Field) -> int:
    if _NUMBER.fullmatch(token):
        value = int(token)
        if not spec.low <= value <= spec.high:
            raise ScheduleError(
                f"{spec.label} value {value} is out of range {spec.low}-{spec.high}"
                + (" (1 = SUN ... 7 = SAT)" if spec is _DOW else "")
            )
        return value
    upper = token.upper()
    if spec.names and upper in spec.names:
        return spec.low + spec.names.index(upper)
    what = f"a number {spec.low}-{spec.high}" + (f" or a {spec.label} name" if spec.names else "")
    raise ScheduleError(f"{spec.label} item {token[:20]!r} is not {what}")


def _item(token: str, spec: _Field) -> set[int]:
    base, slash, step_text = token.partition("/")
    if slash:
        if _NUMBER.fullmatch(step_text) is None or not 1 <= int(step_text) <= spec.high:
            raise ScheduleError(f"{spec.label} step {step_text[:20]!r} is not 1-{spec.high}")
        step = int(step_text)
    else:
        step = 1
    if base == "*":
        low, high = spec.low, spec.high
    else:
        start, dash, end = base.partition("-")
        low = _value(start, spec)
        high = _value(end, spec) if dash else (spec.high if slash else low)
        if low > high:
            raise ScheduleError(f"{spec.label} range {base[:20]!r} ends before it starts")
    return set(range(low, high + 1, step))


def _refuse_special(token: str, spec: _Field) -> None:
    upper = token.upper()
    if spec is _DOM and "W" in upper:
        raise ScheduleError(
            f"day-of-month item {token[:20]!r}: W (nearest weekday) is not supported",
            hint="name the days explicitly, e.g. cron(0 9 1-5 * ? *), or use day-of-week MON-FRI",
        )
    if "L" in upper and not (spec is _DOW or spec is _MONTH):
        raise ScheduleError(
            f"{spec.label} item {token[:20]!r}: only a lone L (the last day of the month) is "
            "supported, in day-of-month",
        )
    if spec is _DOW and upper.endswith("L") and upper not in _DAY_NAMES:
        raise ScheduleError(
            f"day-of-week item {token[:20]!r}: L (last weekday of the month) is not supported",
            hint="use D#N for the N-th weekday, e.g. 6#1 for the first Friday",
        )
    if "#" in token and spec is not _DOW:
        raise ScheduleError(f"{spec.label} item {token[:20]!r}: # is allowed only in day-of-week")


def _field(text: str, spec: _Field) -> frozenset[int]:
    values: set[int] = set()
    for token in text.split(","):
        if not token:
            raise ScheduleError(f"{spec.label} field {text[:20]!r} has an empty list item")
        _refuse_special(token, spec)
        values |= _item(token, spec)
    return frozenset(values)


def _parse_cron(body: str) -> CronExpr:
    parts = body.split(" ")
    if len(parts) != 6 or any(not p for p in parts):
        raise ScheduleError(
            f"cron(...) has {len([p for p in parts if p])} fields separated by single spaces, "
            "not 6 (min hour day-of-month month day-of-week year)"
        )
    minute, hour, dom, month, dow, year = parts
    if (dom == "?") == (dow == "?"):
        raise ScheduleError(
            "exactly one of day-of-month and day-of-week must be '?' (EventBridge's rule)",
            hint="e.g. cron(0 8 * * ? *) for every day, cron(0 8 ? * MON-FRI *) for weekdays",
        )
    for label, text in (("minute", minute), ("hour", hour), ("month", month), ("year", year)):
        if "?" in text:
            raise ScheduleError(f"'?' is allowed only in the day fields, not in {label}")
    days_of_month, last_day = _days_of_month(dom)
    days_of_week, nth = _days_of_week(dow)
    return CronExpr(
        minutes=_field(minute, _MINUTE),
        hours=_field(hour, _HOUR),
        days_of_month=days_of_month,
        last_day=last_day,
        months=_field(month, _MONTH),
        days_of_week=days_of_week,
        nth_weekdays=nth,
        years=_field(year, _YEAR),
    )


def _days_of_month(dom: str) -> tuple[frozenset[int] | None, bool]:
    """The day-of-month field: its days (``None`` for ``?``) and whether it is ``L``."""
    if dom == "?":
        return None, False
    if dom.upper() == "L":
        return frozenset(), True
    return _field(dom, _DOM), False


def _days_of_week(dow: str) -> tuple[frozenset[int] | None, frozenset[tuple[int, int]]]:
    """The day-of-week field: its plain days (``None`` for ``?``) and its ``D#N`` items."""
    if dow == "?":
        return None, frozenset()
    plain: list[str] = []
    nth: set[tuple[int, int]] = set()
    for token in dow.split(","):
        match = _NTH.fullmatch(token)
        if match is None:
            plain.append(token)
            continue
        n = int(match.group(2))
        if not 1 <= n <= 5:
            raise ScheduleError(f"day-of-week item {token!r}: N in D#N must be 1-5")
        nth.add((_value(match.group(1), _DOW), n))
    return (_field(",".join(plain), _DOW) if plain else frozenset()), frozenset(nth)


def _parse_rate(body: str) -> RateExpr:
    match = _RATE.fullmatch(body)
    if match is None:
        raise ScheduleError(f"rate({body[:40]}) is not rate(N unit)")
    n, unit = int(match.group(1)), match.group(2)
    singular = unit.removesuffix("s")
    if singular not in _UNITS:
        raise ScheduleError(f"rate unit {unit[:20]!r} is not minute(s), hour(s) or day(s)")
    if not 1 <= n <= _MAX_RATE:
        raise ScheduleError(f"rate value {n} is not 1-{_MAX_RATE}")
    if (n == 1) != (unit == singular):
        raise ScheduleError(
            f"rate({body}): write the unit singular for 1 and plural otherwise",
            hint="e.g. rate(1 hour), rate(5 minutes)",
        )
    return RateExpr(seconds=n * _UNITS[singular])


def _parse_at(body: str) -> AtExpr:
    if _AT.fullmatch(body) is None:
        raise ScheduleError(f"at({body[:40]}) is not at(yyyy-mm-ddThh:mm:ss)")
    try:
        local = datetime.fromisoformat(body)
    except ValueError as exc:
        raise ScheduleError(f"at({body}) is not a valid date and time: {exc}") from exc
    if not YEAR_MIN <= local.year <= YEAR_MAX:
        raise ScheduleError(f"at({body}): the year must be {YEAR_MIN}-{YEAR_MAX}")
    return AtExpr(local=local)


def parse_expr(text: str) -> ParsedExpr:
    """Parse a schedule expression; raises :class:`ScheduleError` naming the part refused."""
    if len(text) > MAX_EXPR:
        raise ScheduleError(f"the expression is longer than {MAX_EXPR} characters")
    for prefix, parse in (("cron(", _parse_cron), ("rate(", _parse_rate), ("at(", _parse_at)):
        if text.startswith(prefix):
            if not text.endswith(")"):
                raise ScheduleError(f"{text[:40]!r} does not end with ')'")
            parsed: ParsedExpr = parse(text[len(prefix) : -1])
            return parsed
    raise ScheduleError(f"{text[:40]!r} is not cron(...), rate(...) or at(...)")


def local_instant(local: datetime, zone: ZoneInfo) -> datetime | None:
    """The aware instant of naive wall time ``local`` in ``zone``: its first occurrence when the
    clocks fall back, ``None`` when it does not exist (the clocks sprang forward over it)."""
    aware = local.replace(tzinfo=zone, fold=0)
    if aware.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None) != local:
        return None
    return aware


def _error(kind: str, message: str, hint: str, *, path: str = "") -> PydanticCustomError:
    # The shape of oab.controller.api.service.api_error (which imports this module, so this one
    # cannot import it): the issue collector reads ``hint`` and ``path`` from the context.
    ctx: dict[str, str] = {"text": message, "hint": hint}
    if path:
        ctx["path"] = path
    return PydanticCustomError(kind, "{text}", ctx)


def _name(value: str) -> str:
    if len(value) > 63 or _LABEL.fullmatch(value) is None:
        raise _error(
            "dns_label",
            f"{value!r} is not a DNS label",
            "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or "
            "digit",
        )
    return value


def _expr(value: str) -> str:
    try:
        parse_expr(value)
    except ScheduleError as exc:
        raise _error("schedule_expr", exc.message, exc.hint) from None
    return value


def _timezone(value: str) -> str:
    try:
        return check_timezone(value)
    except CronError as exc:
        raise _error("timezone", exc.message, exc.hint) from None


class Schedule(BaseModel):
    """One entry of ``spec.schedules``: from each instant ``expr`` selects, run ``replicas``."""

    # ApiModel's configuration (camelCase aliases, unknown keys refused, inputs never echoed).
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", hide_input_in_errors=True
    )

    name: Annotated[StrictStr, AfterValidator(_name)] | None = Field(
        default=None, description="Shown in status and audit rows; default schedules[INDEX]."
    )
    expr: Annotated[StrictStr, Field(max_length=MAX_EXPR), AfterValidator(_expr)] = Field(
        description="cron(min hour dom month dow year), rate(N unit) or at(yyyy-mm-ddThh:mm:ss)."
    )
    timezone: Annotated[StrictStr, Field(max_length=64), AfterValidator(_timezone)] = Field(
        default="UTC", description="IANA time zone of cron and at expressions."
    )
    # StrictInt, not Literal[0, 1]: a literal check would take YAML ``true`` for 1.
    replicas: StrictInt = Field(ge=0, le=1, description="Task count from each firing: 0 or 1.")

    @model_validator(mode="after")
    def _at_exists(self) -> Schedule:
        parsed = parse_expr(self.expr)
        if isinstance(parsed, AtExpr) and local_instant(parsed.local, self.zone()) is None:
            raise _error(
                "schedule_expr",
                f"{self.expr} does not exist in {self.timezone} (the clocks spring forward "
                "over it)",
                "pick a time outside the daylight-saving gap",
                path="expr",
            )
        return self

    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)

    def parsed(self) -> ParsedExpr:
        """The parsed expression (valid: the model checked it)."""
        return parse_expr(self.expr)


def _unique_names(value: list[Schedule]) -> list[Schedule]:
    seen: set[str] = set()
    for i, schedule in enumerate(value):
        if schedule.name is not None:
            if schedule.name in seen:
                raise _error(
                    "duplicate_schedule",
                    f"schedule name {schedule.name} is used twice",
                    "give each schedule its own name (it is shown in status and audit rows)",
                    path=f"[{i}].name",
                )
            seen.add(schedule.name)
    return value


#: ``spec.schedules``: at most :data:`MAX_SCHEDULES`, names unique.
Schedules = Annotated[
    list[Schedule], Field(max_length=MAX_SCHEDULES), AfterValidator(_unique_names)
]
