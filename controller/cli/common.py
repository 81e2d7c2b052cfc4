"""Helpers shared by the ``oabctl`` command modules.

Registers no command. Holds what several commands need in the same form: the agent, file and
output options, ``[TYPE] [NAME]`` targets, loading ``-f`` manifests, the agent key, the
stored-manifest lookup that turns a missing agent into exit 1, duration parsing (``--timeout``,
``--since``, ``--poll-interval``), time formatting, and :func:`compare_and_swap`, the one
read-modify-write of a stored manifest that ``restart``, ``rollback`` and ``scale`` use.

Invariant of :func:`compare_and_swap`: the document written is computed from exactly one read
and written ``If-Match`` that read's ETag, so a concurrent ``apply`` is never overwritten with a
stale spec; a lost race is re-read and retried, then a conflict (exit 4).

Time model: formatting only; ``relative`` reads the context's injected wall clock (display).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from oab.controller.adapters.objectstore import Blob, ObjectStore, S3ObjectStore, VersionInfo
from oab.controller.adapters.store import (
    ConflictError,
    DesiredStateStore,
    NotFoundError,
    StoreConfig,
    StoredObject,
    object_key,
)
from oab.controller.base.names import SERVICE_RESOURCE
from oab.controller.cli import output as out
from oab.controller.cli.context import Context
from oab.controller.cli.registry import UsageError

__all__ = [
    "CAS_ATTEMPTS",
    "KIND",
    "add_files",
    "add_namespace",
    "add_output",
    "agent_key",
    "compare_and_swap",
    "iso_ms",
    "iso_s",
    "load_manifests",
    "parse_duration",
    "print_structured",
    "relative",
    "require_agent",
    "split_target",
]

#: The kind every day-two command acts on (its name in messages: ``names.SERVICE_RESOURCE``).
KIND: Literal["OABService"] = "OABService"
#: Compare-and-swap rounds of :func:`compare_and_swap` before giving up with a conflict (exit 4).
CAS_ATTEMPTS = 5

_T = TypeVar("_T")

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


def add_namespace(p: argparse.ArgumentParser, *, all_namespaces: bool = False) -> None:
    """``-n/--namespace`` (default ``default``), and ``-A/--all-namespaces`` if asked for."""
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    if all_namespaces:
        p.add_argument(
            "-A", "--all-namespaces", action="store_true", help="list across all namespaces"
        )


def add_output(p: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    """``-o/--output`` limited to ``choices``."""
    p.add_argument("-o", "--output", choices=list(choices), default=None, help="output format")


def add_files(p: argparse.ArgumentParser, *, required: bool) -> None:
    """``-f/--filename``: files, directories of ``*.yaml`` or ``-`` (stdin), repeatable."""
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        required=required,
        metavar="FILE|DIR|-",
        help="manifest file, directory of *.yaml, or - for stdin (repeatable)",
    )


_SERVICE_TYPES = frozenset({"oabservice", "oabservices", "oabsvc", "oabsvcs"})
_FLEET_TYPES = frozenset({"oabfleet", "oabfleets", "fleet", "fleets"})


def split_target(words: Sequence[str]) -> tuple[str, str | None]:
    """``[TYPE] [NAME]`` -> (kind, name); a lone word that is not a type is a service name."""
    if not words:
        return "OABService", None
    first = words[0].lower().split(".", 1)[0]
    if first in _FLEET_TYPES or first in _SERVICE_TYPES:
        kind = "OABFleet" if first in _FLEET_TYPES else "OABService"
        if len(words) > 2:
            raise UsageError(f"expected [TYPE] [NAME], got {' '.join(words)}")
        return kind, words[1] if len(words) == 2 else None
    if len(words) > 1:
        raise UsageError(f"unknown resource type {words[0]!r}; use oabservice or oabfleet")
    return "OABService", words[0]


def load_manifests(ctx: Context) -> list[Any]:
    """Every document of ``-f``, validated (all or nothing: :mod:`oab.controller.api.manifests`)."""
    from oab.controller.api.manifests import load_paths

    docs: list[Any] = load_paths(ctx.args.filename, stdin=ctx.stdin)
    return docs


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


# ------------------------------------------------------- compare-and-swap of one manifest


@dataclass
class _PinnedReads:
    """An :class:`~oab.controller.adapters.objectstore.ObjectStore` that answers reads of ``key``
    with ``blob``, read once before.

    The store computes its write from what it reads and writes ``If-Match`` that read's ETag, so
    pinning the read turns the store's apply into a compare-and-swap against *our* read: if the
    object changed since, S3 refuses the write instead of the store recomputing on a newer
    document we never looked at.
    """

    inner: ObjectStore
    key: str
    blob: Blob | None

    def read(self, key: str) -> Blob | None:
        return self.blob if key == self.key else self.inner.read(key)

    def put(
        self, key: str, body: bytes, *, if_match: str | None, metadata: Mapping[str, str]
    ) -> Blob:
        return self.inner.put(key, body, if_match=if_match, metadata=metadata)

    def remove(self, key: str, *, if_match: str) -> None:
        self.inner.remove(key, if_match=if_match)

    def list_keys(self, prefix: str) -> list[str]:
        return self.inner.list_keys(prefix)

    def versions(self, key: str) -> list[VersionInfo]:
        return self.inner.versions(key)

    def read_version(self, key: str, version_id: str) -> tuple[Blob, Mapping[str, str]]:
        return self.inner.read_version(key, version_id)


def compare_and_swap(ctx: Context, key: str, change: Callable[[DesiredStateStore], _T]) -> _T:
    """Run ``change`` on a store whose reads of the object ``key`` are pinned to one fresh read,
    so the store's write is ``If-Match`` that read's ETag; return what ``change`` returns.

    When the write loses (:class:`ConflictError`: someone wrote ``key`` since our read), read
    again and rerun ``change``, up to :data:`CAS_ATTEMPTS` times; then raise
    :class:`ConflictError` with the current generation (exit 4). ``change`` must be a pure
    function of what it reads from the store it is given (it may run several times) and raise
    a domain error to refuse (not found, fleet-owned, being deleted).
    """
    objects = S3ObjectStore(ctx.client("s3"), ctx.settings.bucket)
    changes = ctx.state().changes
    for _attempt in range(CAS_ATTEMPTS):
        pinned = _PinnedReads(objects, key, objects.read(key))
        store = DesiredStateStore(
            pinned,
            changes=changes,
            config=StoreConfig(max_attempts=1),  # a lost write means our read is stale: re-read
            wall_clock=ctx.wall_clock,
        )
        try:
            return change(store)
        except ConflictError:
            continue
    latest = ctx.store().get(key)
    raise ConflictError(
        key, attempts=CAS_ATTEMPTS, current_generation=latest.generation if latest else None
    )
