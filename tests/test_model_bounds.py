"""Every integer of a manifest and every number of the daemon's settings has a documented range.

Integers above int64 used to be accepted and rendered into config.toml (TOML integers are i64:
OpenAB then failed to start), and a lease duration of ``inf`` meant a leader nobody could ever
replace. Each case puts the largest allowed value (accepted) and the next one, int64's maximum and
beyond (refused, with the field's path) into an otherwise valid document.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from oab.controller.api.document import parse_document
from oab.controller.api.issues import InvalidDocument
from oab.controller.api.service import MAX_GENERATION
from oab.controller.runtime.settings import (
    DaemonSettings,
    DaemonSettingsError,
    load_daemon_settings,
)

INT64_MAX = 2**63 - 1
DISCORD_ID = "123456789012345678"


def _service() -> dict[str, Any]:
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
            },
        },
    }


def _fleet() -> dict[str, Any]:
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABFleet",
        "metadata": {"name": "fleet", "namespace": "team"},
        "spec": {
            "defaults": {
                "cpu": 256,
                "memory": 512,
                "taskDefinition": {"image": "ghcr.io/openabdev/openab:stable-kiro"},
                "config": {
                    "agent": {"preset": "kiro"},
                    "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
                },
            },
            "agents": [{"name": "a1"}],
        },
    }


def _put(doc: dict[str, Any], path: tuple[str | int, ...], value: int) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    target: Any = out
    for part in path[:-1]:
        target = target.setdefault(part, {}) if isinstance(target, dict) else target[part]
    target[path[-1]] = value
    return out


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# (document factory, field path, largest accepted value or None when the field has its own rule)
CASES: list[tuple[str, Any, tuple[str | int, ...], int | None]] = [
    ("generation", _service, ("metadata", "generation"), MAX_GENERATION),
    ("cpu", _service, ("spec", "cpu"), None),
    ("memory", _service, ("spec", "memory"), None),
    ("replicas", _service, ("spec", "replicas"), None),
    ("max_bot_turns", _service, ("spec", "config", "discord", "max_bot_turns"), 1000),
    (
        "max_buffered_messages",
        _service,
        ("spec", "config", "discord", "max_buffered_messages"),
        10_000,
    ),
    ("max_batch_tokens", _service, ("spec", "config", "discord", "max_batch_tokens"), 10_000_000),
    ("max_sessions", _service, ("spec", "config", "pool", "max_sessions"), 1000),
    ("session_ttl_hours", _service, ("spec", "config", "pool", "session_ttl_hours"), 8760),
    (
        "prompt_hard_timeout_secs",
        _service,
        ("spec", "config", "pool", "prompt_hard_timeout_secs"),
        86_400,
    ),
    ("liveness_check_secs", _service, ("spec", "config", "pool", "liveness_check_secs"), 3600),
    ("debounce_ms", _service, ("spec", "config", "reactions", "timing", "debounce_ms"), 3_600_000),
    (
        "error_hold_ms",
        _service,
        ("spec", "config", "reactions", "timing", "error_hold_ms"),
        3_600_000,
    ),
    ("status running_count", _service, ("status", "runningCount"), 1_000_000),
    ("status observedGeneration", _service, ("status", "observedGeneration"), MAX_GENERATION),
    ("fleet defaults cpu", _fleet, ("spec", "defaults", "cpu"), None),
    ("fleet defaults memory", _fleet, ("spec", "defaults", "memory"), None),
    ("fleet agent cpu", _fleet, ("spec", "agents", 0, "cpu"), None),
    ("fleet agent memory", _fleet, ("spec", "agents", 0, "memory"), None),
]


@pytest.mark.parametrize(("what", "make", "path", "largest"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("huge", [INT64_MAX, INT64_MAX + 1, 2**64 + 1, 10**30, -(2**63) - 1])
def test_huge_integers_are_refused_at_their_path(
    what: str, make: Any, path: tuple[str | int, ...], largest: int | None, huge: int
) -> None:
    parse_document(make())
    with pytest.raises(InvalidDocument) as info:
        parse_document(_put(make(), path, huge))
    assert _dotted(path) in {issue.dotted for issue in info.value.issues}, what


@pytest.mark.parametrize(
    ("what", "make", "path", "largest"),
    [c for c in CASES if c[3] is not None],
    ids=[c[0] for c in CASES if c[3] is not None],
)
def test_the_documented_maximum_is_accepted_and_one_more_is_not(
    what: str, make: Any, path: tuple[str | int, ...], largest: int
) -> None:
    parse_document(_put(make(), path, largest))
    with pytest.raises(InvalidDocument):
        parse_document(_put(make(), path, largest + 1))


FLOAT_FIELDS = [
    name
    for name, info in DaemonSettings.model_fields.items()
    if info.annotation is float and name != "chaos_clock_offset_s"
]


def test_every_daemon_number_has_an_upper_bound() -> None:
    numeric = [
        name
        for name, info in DaemonSettings.model_fields.items()
        if info.annotation in (int, float)
    ]
    assert len(numeric) >= 18
    unbounded = [
        name
        for name in numeric
        if not any(
            getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None
            for m in DaemonSettings.model_fields[name].metadata
        )
    ]
    assert unbounded == []


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["inf", "nan", "1e308", str(INT64_MAX)])
def test_daemon_settings_refuse_infinite_and_huge_numbers(field: str, value: str) -> None:
    with pytest.raises(DaemonSettingsError, match=field):
        load_daemon_settings(env={f"OAB_{field.upper()}": value})


@pytest.mark.parametrize("field", ["workers", "queue_shards"])
def test_daemon_counts_are_bounded(field: str) -> None:
    with pytest.raises(DaemonSettingsError, match=field):
        load_daemon_settings(env={f"OAB_{field.upper()}": str(INT64_MAX + 1)})


def test_lease_timings_are_bounded_but_defaults_pass() -> None:
    settings = load_daemon_settings(env={})
    assert settings.lease_duration_s == 6.0
    ok = load_daemon_settings(env={"OAB_LEASE_DURATION_S": "60", "OAB_RENEW_DEADLINE_S": "50"})
    assert ok.lease_duration_s == 60
