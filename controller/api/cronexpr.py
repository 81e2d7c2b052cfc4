"""Cron expressions and time zones, checked the way OpenAB reads them.

Design
------
OpenAB (``crates/openab-core/src/cron.rs``, ``parse_cron_expr``) translates a job's 5-field
POSIX ``schedule`` (day-of-week only, see below), prepends ``"0 "`` (the seconds field), parses it
with the Rust ``cron`` crate (0.16) and parses ``timezone`` with ``chrono-tz``; a job either
refuses stops the agent at start-up. So a manifest's cron jobs are checked here, before anything
is stored, with the grammar of the OpenAB release this project targets
(:data:`oab.controller.api.openab.OPENAB_RELEASE`):

======== ======= ===========================================================================
field    values  names (case-insensitive)
======== ======= ===========================================================================
minute   0-59
hour     0-23
day      1-31    ``?`` also means "any"
month    1-12    JAN-DEC (and full names)
weekday  0-7     SUN-SAT (and full names, TUES, THURS). Numbers are **POSIX**: 0 and 7 =
                 Sunday, ``1-5`` = Monday to Friday. OpenAB translates them to the crate's
                 1-7-from-Sunday numbering itself; names pass through untranslated. A field
                 mixing numbers and names (``1,MON``, ``MON-5``) is refused, and so is ``?``.
======== ======= ===========================================================================

OpenAB releases up to 0.8.3 did not translate: there ``1-5`` meant Sunday to Thursday and ``0``
was refused. Names (``MON-FRI``) mean the same in every release, so examples use them.

A field is a comma-separated list of items: ``*``; ``N``; ``A-B`` (``A <= B``); ``NAME``;
``NAME-NAME``; and ``*``, ``N``, ``A-B`` or ``NAME-NAME`` followed by ``/STEP`` with ``STEP``
between 1 and the field's maximum (``N/STEP`` means ``N-max/STEP``). Fields are separated by
spaces. Not accepted: a sixth field (the crate would read it as a year), ``@daily``-style
shortcuts (they do not survive OpenAB's ``"0 "`` prefix), ``L``, ``W`` and ``#``. The grammar
is a subset of the crate's, so an expression accepted here is one OpenAB runs.

Time zones are IANA names from the ``tzdata`` package (the database ``zoneinfo`` falls back to;
``chrono-tz`` compiles in the same IANA data), compared exactly: ``chrono-tz`` is
case-sensitive. Reading the package rather than the host's ``/usr/share/zoneinfo`` keeps the
answer the same on every machine, containers without tzdata included.

:func:`parse_cron` returns the parsed sets, so later schedule kinds (``cron(...)``,
``rate(...)``, ``at(...)``) can reuse it.

Invariants: pure (no clock, no I/O except reading the packaged zone list once); bounded work
(expressions of at most :data:`MAX_EXPRESSION` characters).
Time model: none; the schedule is interpreted by OpenAB, in the job's time zone.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from functools import cache
from typing import Final

from oab.controller.base.errors import InvalidInput

__all__ = [
    "FIELDS",
    "MAX_EXPRESSION",
    "CronError",
    "CronExpression",
    "CronField",
    "check_timezone",
    "parse_cron",
    "timezones",
]

#: Longest expression checked (OpenAB has no limit; nothing sensible is longer).
MAX_EXPRESSION: Final = 256
_MAX_TIMEZONE: Final = 64
_HINT: Final = (
    "write minute hour day-of-month month day-of-week, e.g. '0 9 * * MON-FRI' "
    "(weekdays count 1-7 from Sunday; names are clearer)"
)


class CronError(InvalidInput):
    """An expression or time zone OpenAB would refuse; ``hint`` says what to write."""

    reason = "InvalidCron"

    def __init__(self, message: str, *, hint: str = _HINT) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class CronField:
    """One field of the grammar: its range and its names."""

    label: str
    low: int
    high: int
    names: tuple[tuple[str, int], ...] = ()
    any_allowed: bool = False


_DAYS = (
    ("sun", 1),
    ("sunday", 1),
    ("mon", 2),
    ("monday", 2),
    ("tue", 3),
    ("tues", 3),
    ("tuesday", 3),
    ("wed", 4),
    ("wednesday", 4),
    ("thu", 5),
    ("thurs", 5),
    ("thursday", 5),
    ("fri", 6),
    ("friday", 6),
    ("sat", 7),
    ("saturday", 7),
)
_MONTHS = tuple(
    (name, i + 1)
    for i, (short, long) in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may", "may"),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for name in dict.fromkeys((short, long))
)

#: The five fields in order.
FIELDS: Final[tuple[CronField, ...]] = (
    CronField("minute", 0, 59),
    CronField("hour", 0, 23),
    CronField("day-of-month", 1, 31, any_allowed=True),
    CronField("month", 1, 12, _MONTHS),
    CronField("day-of-week", 0, 7, _DAYS),
)
#: The crate's day-of-week numbering (1 = Sunday ... 7 = Saturday): names and parsed sets use it.
_CRATE_DOW: Final = CronField("day-of-week", 1, 7, _DAYS)

_NUMBER = re.compile(r"[0-9]{1,9}")
_NAME = re.compile(r"[A-Za-z]{1,16}")


@dataclass(frozen=True)
class CronExpression:
    """A parsed 5-field expression: the values each field selects."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]


def _value(token: str, spec: CronField, *, named: bool) -> int:
    if _NUMBER.fullmatch(token):
        value = int(token)
        if not spec.low <= value <= spec.high:
            raise CronError(f"{spec.label} value {value} is out of range {spec.low}-{spec.high}")
        return value
    if named and spec.names and _NAME.fullmatch(token):
        lookup = dict(spec.names)
        found = lookup.get(token.lower())
        if found is not None:
            return found
    if spec.names:
        raise CronError(
            f"{spec.label} item {token[:20]!r} is neither a number {spec.low}-{spec.high} nor a "
            f"{spec.label} name"
        )
    raise CronError(f"{spec.label} item {token[:20]!r} is not a number {spec.low}-{spec.high}")


def _range(token: str, spec: CronField) -> tuple[int, int]:
    """``N`` or ``A-B`` (numbers or names, not mixed) -> inclusive bounds."""
    start, dash, end = token.partition("-")
    if not dash:
        value = _value(token, spec, named=True)
        return value, value
    if bool(_NUMBER.fullmatch(start)) != bool(_NUMBER.fullmatch(end)):
        raise CronError(f"{spec.label} range {token[:20]!r} mixes a number and a name")
    low, high = _value(start, spec, named=True), _value(end, spec, named=True)
    if low > high:
        raise CronError(f"{spec.label} range {token[:20]!r} ends before it starts")
    return low, high


def _item(token: str, spec: CronField) -> set[int]:
    everything = set(range(spec.low, spec.high + 1))
    base, slash, step_text = token.partition("/")
    if base == "?" and not spec.any_allowed:
        raise CronError(f"'?' (any) is allowed only in the day fields, not in {spec.label}")
    if not slash:
        if base in ("*", "?"):
            return everything
        low, high = _range(base, spec)
        return set(range(low, high + 1))
    if _NUMBER.fullmatch(step_text) is None:
        raise CronError(f"{spec.label} step {step_text[:20]!r} is not a whole number")
    step = int(step_text)
    if not 1 <= step <= spec.high:
        raise CronError(f"{spec.label} step {step} must be between 1 and {spec.high}")
    if base in ("*", "?"):
        low, high = spec.low, spec.high
    elif "-" in base:
        low, high = _range(base, spec)
    elif _NUMBER.fullmatch(base):
        low, high = _value(base, spec, named=False), spec.high
    else:
        # The crate refuses NAME/STEP (a named point with a step).
        raise CronError(f"{spec.label} item {token[:20]!r}: a step needs *, N or a range before it")
    return set(range(low, high + 1, step))


def _field(text: str, spec: CronField) -> frozenset[int]:
    values: set[int] = set()
    for token in text.split(","):
        if not token:
            raise CronError(f"{spec.label} field {text[:20]!r} has an empty list item")
        values |= _item(token, spec)
    return frozenset(values)


def _day_of_week(text: str) -> frozenset[int]:
    """OpenAB's ``translate_posix_dow_field``, then the crate: a set in crate numbering."""
    has_alpha = any("a" <= c.lower() <= "z" for c in text)
    has_digit = any("0" <= c <= "9" for c in text)
    if has_alpha and has_digit:
        raise CronError(
            f"day-of-week field {text[:20]!r} mixes numbers and names",
            hint="write either POSIX numbers (1-5 = Monday to Friday) or names (MON-FRI)",
        )
    if has_alpha:
        return _field(text, _CRATE_DOW)
    posix: set[int] = set()
    spec = FIELDS[4]
    for token in text.split(","):
        if not token:
            raise CronError(f"day-of-week field {text[:20]!r} has an empty list item")
        base, slash, step_text = token.partition("/")
        step = 1
        if slash:
            if _NUMBER.fullmatch(step_text) is None or int(step_text) == 0:
                raise CronError(f"day-of-week step {step_text[:20]!r} is not a whole number >= 1")
            step = int(step_text)
        if base == "*":
            values = list(range(0, 7))
        elif "-" in base:
            low, high = _range(base, spec)
            values = list(range(low, high + 1))
        else:
            value = _value(base, spec, named=False)
            # N/STEP runs from N to Saturday (7, Sunday's alias, starts at 0).
            values = list(range(0 if value == 7 else value, 7)) if step > 1 else [value]
        posix |= {0 if v == 7 else v for v in values[::step]}
    return frozenset(day + 1 for day in posix)


def parse_cron(text: str) -> CronExpression:
    """Parse a 5-field expression as OpenAB does; raises :class:`CronError` naming the field."""
    if len(text) > MAX_EXPRESSION:
        raise CronError(f"the expression is longer than {MAX_EXPRESSION} characters")
    if text.startswith("@"):
        raise CronError(
            f"{text[:20]!r}: shortcuts such as @daily are not supported by OpenAB",
            hint="write the 5 fields, e.g. '0 0 * * *' for daily at midnight",
        )
    if any(c.isspace() and c != " " for c in text) or text != text.strip(" "):
        raise CronError(
            "the expression may contain only single-line text with fields separated by spaces"
        )
    parts = [p for p in text.split(" ") if p]
    if len(parts) != len(FIELDS):
        extra = " (OpenAB would read a sixth field as the year)" if len(parts) == 6 else ""
        raise CronError(f"the expression has {len(parts)} fields, not 5{extra}")
    minutes, hours, days, months = (
        _field(part, spec) for part, spec in zip(parts[:4], FIELDS[:4], strict=True)
    )
    return CronExpression(text, minutes, hours, days, months, _day_of_week(parts[4]))


@cache
def timezones() -> frozenset[str]:
    """Every IANA time zone name OpenAB accepts (from the ``tzdata`` package)."""
    listing = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    # "Factory" is tzdata's placeholder zone for unconfigured systems, not a place.
    return frozenset(line.strip() for line in listing.splitlines() if line.strip()) - {"Factory"}


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone (exact spelling); raises :class:`CronError`."""
    known = timezones()
    if name in known:
        return name
    shown = name[:_MAX_TIMEZONE]
    near = [z for z in known if z.lower() == name.lower()]
    hint = (
        f"time zone names are case-sensitive: write {near[0]}"
        if near
        else "write an IANA time zone name such as UTC, Europe/Berlin or America/New_York"
    )
    raise CronError(f"{shown!r} is not an IANA time zone", hint=hint)
