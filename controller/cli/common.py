"""Helpers shared by the day-two ``oabctl`` modules (``cli_wait``, ``cli_logs``, ``cli_ops``).

Registers no command. Holds what several commands need in the same form: the agent argument and
output options, the agent key, the stored-manifest lookup that turns a missing agent into exit 1,
duration parsing (``--timeout``, ``--since``, ``--poll-interval``) and time formatting.

Time model: formatting only; ``relative`` reads the context's injected wall clock (display).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from oab.controller.adapters.store import DesiredStateStore, NotFoundError, StoredObject, object_key
from oab.controller.base.names import SERVICE_RESOURCE
from oab.controller.cli import output as out
from oab.controller.cli.main import Context, UsageError

__all__ = [
    "KIND",
    "add_namespace",
    "add_output",
    "agent_key",
    "iso_ms",
    "iso_s",
    "parse_duration",
    "print_structured",
    "relative",
    "require_agent",
]

#: The kind every day-two command acts on (its name in messages: ``names.SERVICE_RESOURCE``).
KIND: Literal["OABService"] = "OABService"

# ------------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """kubectl/Go-style duration in seconds: ``30s``, ``5m``, ``1h30m``, ``500ms``; a bare number
    is seconds. Raises :class:`~oab.controller.cli.main.UsageError` on anything else."""
    value = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    parts = _DURATION_PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise UsageError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


# ------------------------------------------------------------------------- agent and output


def add_namespace(p: argparse.ArgumentParser) -> None:
    """``-n/--namespace`` (default ``default``)."""
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")


def add_output(p: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    """``-o/--output`` limited to ``choices``."""
    p.add_argument("-o", "--output", choices=list(choices), default=None, help="output format")


def agent_key(ctx: Context) -> str:
    """``namespace/name`` of the agent a command names (``NAME`` and ``-n``)."""
    return f"{ctx.args.namespace}/{ctx.args.name}"


def iso_ms(ts: float) -> str:
    """ISO-8601 UTC with milliseconds and ``Z`` (stored stamps)."""
    stamp = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def iso_s(ts: float | None) -> str | None:
    """ISO-8601 UTC to the second (shown times); ``None`` stays ``None``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def relative(ctx: Context, ts: float | None) -> str | None:
    """``in 12s`` / ``3m ago`` against the wall clock (display only)."""
    if ts is None:
        return None
    delta = ts - ctx.wall_clock()
    if delta > 0:
        return f"in {out.format_age(delta)}"
    return f"{out.format_age(-delta)} ago"


def require_agent(store: DesiredStateStore, namespace: str, name: str) -> StoredObject:
    """The stored manifest of ``namespace/name``; :class:`NotFoundError` (exit 1) if none."""
    obj = store.get(object_key(KIND, namespace, name))
    if obj is None:
        raise NotFoundError(f'{SERVICE_RESOURCE} "{name}" in namespace {namespace}')
    return obj


def print_structured(ctx: Context, payload: object) -> None:
    """``payload`` as JSON for ``-o json``, YAML otherwise."""
    if ctx.output is out.OutputFormat.JSON:
        ctx.print(out.to_json(payload))
    else:
        ctx.print(out.to_yaml(payload).rstrip("\n"))
