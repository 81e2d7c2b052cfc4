"""Day-two ``oabctl`` commands: describe, history, restart, rollback, leader, queue.

Listed in ``COMMANDS`` (offered by
:data:`oab.controller.cli.main.GROUPS`); exit codes follow the registry's table (0 ok, 1
not found / not met / refused, 2 usage, 3 AWS, 4 concurrent modifications, 130 Ctrl-C).

Design
------
- **Read-only commands read the truth directly**: the manifest from the desired-state store
  (S3, strongly consistent), the status item and the audit run log from DynamoDB with
  consistent reads, the work unit through :class:`oab.queue.workqueue.WorkQueue`, the lease
  through :func:`oab.leader.status.describe`. Nothing is cached between polls.
- **Writes go through the store, never to ECS.** ``restart`` writes the annotation
  ``oab.dev/restartedAt`` (no generation bump; a change record makes the controller reconcile and
  force a new deployment); ``rollback`` re-applies a stored generation's spec as a new
  generation. Both are compare-and-swap read-modify-writes
  (:func:`~oab.controller.cli.common.compare_and_swap`, shared with ``scale``): the document is
  computed from one read and written ``If-Match`` that read's ETag, so a concurrent ``apply`` is
  never silently overwritten with a stale spec; a lost race is re-read and retried, then
  reported as a conflict (exit 4).
- **Siblings.** ``wait`` (:mod:`oab.controller.cli.wait`) and ``logs``
  (:mod:`oab.controller.cli.logs`) are modules of their own; helpers all of them share
  (agent lookup, options, durations, time formatting) are in :mod:`oab.controller.cli.common`.
- **Secrets.** ``describe`` shows secrets by name and source only; nothing here reads a secret
  value, and status/run-log messages are built by the controller from names and versions.

Invariants
----------
- ``rollback`` always produces generation ``current + 1`` of exactly the CAS-read document (or
  writes nothing when the spec already equals generation N's).

Time model: ages and the restart stamp use the injected wall clock (``Context.wall_clock``);
stored times are shown as ISO-8601 UTC.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from oab.controller.adapters.store import (
    Desired,
    DesiredStateStore,
    NotFoundError,
    StoredObject,
    object_key,
)
from oab.controller.base.errors import OabError
from oab.controller.base.names import RESTART_ANNOTATION, SERVICE_RESOURCE
from oab.controller.cli import output as out
from oab.controller.cli.common import (
    KIND,
    add_namespace,
    add_output,
    agent_key,
    compare_and_swap,
    iso_ms,
    iso_s,
    print_structured,
    relative,
    require_agent,
)
from oab.controller.cli.context import Context
from oab.controller.cli.registry import EXIT_OK, Command, UsageError, command
from oab.controller.core.status import AuditRecord, unreadable_json
from oab.controller.core.stored import UnreadableItem

__all__ = [
    "COMMANDS",
    "DEFAULT_LEASE",
    "DESCRIBE_RUNS",
    "OperationRefused",
    "WorkQueueError",
]

#: Lease the daemon elects on (``DaemonSettings.lease_name``'s default).
DEFAULT_LEASE = "controller"
#: Rows of the audit run log ``describe`` shows.
DESCRIBE_RUNS = 10


class OperationRefused(OabError):
    """A restart or rollback that cannot be done as asked (fleet-owned, being deleted): exit 1."""

    reason = "OperationRefused"


class WorkQueueError(OabError):
    """A work-queue error seen by ``oabctl queue``; keeps the queue error's ``retryable``."""

    reason = "WorkQueueError"

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


# ------------------------------------------------------------------------------ describe


def _secret_summary(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    # Name and source only: paths and ARNs are references, not values, but describe does not
    # need them and they sometimes encode more than an operator should paste into a ticket.
    return [
        {
            "name": s.get("name"),
            "source": s.get("source"),
            "autoRestart": bool(s.get("autoRestart", False)),
        }
        for s in spec.get("secrets") or []
    ]


def _spec_summary(spec: Mapping[str, Any]) -> dict[str, Any]:
    ecs = (spec.get("platform") or {}).get("ecs") or {}
    return {
        "image": (spec.get("taskDefinition") or {}).get("image"),
        "cpu": spec.get("cpu"),
        "memory": spec.get("memory"),
        "replicas": spec.get("replicas", 1),
        "capacityProvider": ecs.get("capacityProvider") or spec.get("capacityProvider"),
        "secrets": _secret_summary(spec),
    }


def _metadata_summary(obj: StoredObject) -> dict[str, Any]:
    meta = obj.metadata
    return {
        "name": obj.name,
        "namespace": obj.namespace,
        "uid": meta.get("uid"),
        "generation": obj.generation,
        "creationTimestamp": meta.get("creationTimestamp"),
        "deletionTimestamp": meta.get("deletionTimestamp"),
        "labels": dict(obj.labels),
        "annotations": dict(obj.annotations),
        "fleet": obj.owner,
    }


def _queue_row(ctx: Context, key: str) -> Any:
    """The work unit of ``key`` (an ``UnreadableRow`` when it does not decode), or ``None``."""
    from oab.queue.errors import CorruptRow

    try:
        with _queue_errors():
            return _work_queue(ctx).get(key)
    except NotFoundError:
        return None  # never enqueued yet, or removed with the agent
    except WorkQueueError as exc:
        if isinstance(exc.__cause__, CorruptRow):
            return exc.__cause__.row  # shown as state "corrupt" with the problem
        raise


def _run_columns() -> list[out.Column]:
    return [
        out.Column("SEQ", lambda r: r.seq),
        out.Column("TIME", lambda r: iso_s(r.at)),
        out.Column("RUN", lambda r: r.run_id),
        out.Column("GEN", lambda r: r.generation),
        out.Column("FROM", lambda r: r.from_phase or "-"),
        out.Column("TO", lambda r: r.to_phase or "-"),
        out.Column("OUTCOME", lambda r: r.outcome),
        out.Column("CALLS", lambda r: len(r.calls)),
        out.Column("REPLICA", lambda r: r.replica),
        out.Column("EPOCH", lambda r: r.epoch),
        out.Column("TRACE", lambda r: r.trace_id),
        out.Column("EVENT", lambda r: r.event, wide_only=True),
        out.Column("DURATION", lambda r: f"{r.duration_ms}ms", wide_only=True),
        out.Column("ERROR", lambda r: r.error, wide_only=True),
    ]


def _indent(text: str, spaces: int) -> list[str]:
    return [" " * spaces + line for line in text.splitlines()]


def _cell(value: object) -> str:
    # kubectl's convention, as in the tables: an empty value prints as <none>.
    return "<none>" if value is None or value in ("", [], {}) else str(value)


def _fields(pairs: Sequence[tuple[str, object]], indent: int) -> list[str]:
    width = max(len(k) for k, _ in pairs) + 2
    return [" " * indent + f"{label}:".ljust(width) + _cell(value) for label, value in pairs]


def _kv(mapping: Mapping[str, str]) -> str | None:
    return ",".join(f"{k}={v}" for k, v in sorted(mapping.items())) or None


def _describe_text(ctx: Context, doc: Mapping[str, Any], runs: Sequence[AuditRecord]) -> str:
    meta, spec, status, row = doc["metadata"], doc["spec"], doc["status"], doc["queue"]
    lines = _fields(
        [
            ("Name", meta["name"]),
            ("Namespace", meta["namespace"]),
            ("Kind", KIND),
            ("UID", meta["uid"]),
            ("Generation", meta["generation"]),
            ("Created", meta["creationTimestamp"]),
            ("Deleted", meta["deletionTimestamp"]),
            ("Fleet", meta["fleet"]),
            ("Labels", _kv(meta["labels"])),
            ("Annotations", _kv(meta["annotations"])),
        ],
        0,
    )
    lines.append("Spec:")
    lines += _fields(
        [
            ("Image", spec["image"]),
            ("CPU", spec["cpu"]),
            ("Memory", spec["memory"]),
            ("Replicas", spec["replicas"]),
            ("Capacity", spec["capacityProvider"]),
        ],
        2,
    )
    secret_cols = [
        out.Column("NAME", lambda s: s["name"]),
        out.Column("SOURCE", lambda s: s["source"]),
        out.Column("AUTO-RESTART", lambda s: str(s["autoRestart"]).lower()),
    ]
    if doc.get("schedule"):  # spec.suspend / spec.schedules (cli/scale.py schedule_view)
        view = doc["schedule"]
        lines += _fields(
            [
                ("Suspend", str(view["suspend"]).lower()),
                ("Desired Replicas", f"{view['desiredReplicas']} ({view['because']})"),
                ("Next Transition", view["nextTransition"] or "<none>"),
            ],
            2,
        )
        lines += ["  Schedules:", *("    " + s for s in view["schedules"])]
    lines.append("  Secrets:" + ("" if spec["secrets"] else "  <none>"))
    if spec["secrets"]:
        lines += _indent(out.render_table(spec["secrets"], secret_cols), 4)
    lines.append("Status:")
    lines += _fields(
        [
            ("Phase", status["phase"] + (f" ({status['reason']})" if "reason" in status else "")),
            ("Observed Generation", status["observedGeneration"]),
            ("Last Reconciled", status["lastReconciled"]),
            ("Last Error", status["lastError"]),
            ("Attempts", status["attempts"]),
            ("Last Run", status["lastRunId"]),
            ("Trace", status["traceId"]),
            ("Service", status["serviceArn"]),
            ("Task Definition", status["taskDefinitionArn"]),
        ],
        2,
    )
    lines.append("  Tasks:" + ("" if status["taskArns"] else "  <none>"))
    lines += ["    " + arn for arn in status["taskArns"]]
    urls = status.get("webhookUrls") or []
    lines.append("  Webhook URLs:" + ("" if urls else "  <none>"))
    lines += ["    " + url for url in urls]
    cond_cols = [
        out.Column("TYPE", lambda c: c["type"]),
        out.Column("STATUS", lambda c: c["status"]),
        out.Column("REASON", lambda c: c["reason"]),
        out.Column("LAST-TRANSITION", lambda c: c["lastTransitionTime"]),
        out.Column("MESSAGE", lambda c: c["message"]),
    ]
    lines.append("  Conditions:" + ("" if status["conditions"] else "  <none>"))
    if status["conditions"]:
        lines += _indent(out.render_table(status["conditions"], cond_cols), 4)
    lines.append("Queue:" + ("" if row else "  <none>"))
    if row:
        ready_at = row["ready_at"]
        next_run = f"{iso_s(ready_at)} ({relative(ctx, ready_at)})" if ready_at else None
        lines += _fields(
            [
                ("State", row["state"]),
                ("Generation", row["generation"]),
                ("Attempts", row["attempts"]),
                ("Next Retry", next_run),
                ("Owner", row["owner"]),
                ("Last Error", row["last_error"]),
            ],
            2,
        )
    lines.append("Recent Runs:" + ("" if runs else "  <none>"))
    if runs:
        lines += _indent(out.render_table(runs, _run_columns()), 2)
    lines += [f"  (skipped an unreadable run: {p})" for p in doc.get("unreadableRuns", [])]
    return "\n".join(lines)


def _configure_describe(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="agent name")
    add_namespace(p)
    add_output(p, ["json", "yaml"])


@command(
    "describe",
    help="show an agent: manifest summary, status, conditions, work unit, recent runs",
    configure=_configure_describe,
)
def _describe(ctx: Context) -> int:
    key = agent_key(ctx)
    obj = require_agent(ctx.store(), ctx.args.namespace, ctx.args.name)
    state = ctx.state()
    try:
        status = state.read_status(key).to_json()
    except UnreadableItem as exc:
        status = unreadable_json(key, exc)  # shown, with the problem, instead of failing
    row = _queue_row(ctx, key)
    skipped: list[str] = []
    runs = list(
        reversed(
            state.read_runlog(
                key,
                limit=DESCRIBE_RUNS,
                on_unreadable=lambda exc: skipped.append(str(exc)),
            )
        )
    )
    doc: dict[str, Any] = {
        "kind": KIND,
        "metadata": _metadata_summary(obj),
        "spec": _spec_summary(obj.spec),
        "status": status,
        "queue": row.as_json() if row is not None else None,
        "recentRuns": [r.to_json() for r in runs],
    }
    from oab.controller.cli.scale import schedule_view

    if (view := schedule_view(obj.spec, ctx.wall_clock())) is not None:
        doc["schedule"] = view
    if skipped:
        doc["unreadableRuns"] = skipped
    if ctx.output in (out.OutputFormat.JSON, out.OutputFormat.YAML):
        print_structured(ctx, doc)
    else:
        ctx.print(_describe_text(ctx, doc, runs))
    return EXIT_OK


# ------------------------------------------------------------------------------- history


def _configure_history(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="agent name")
    add_namespace(p)
    add_output(p, ["wide", "json", "yaml"])
    p.add_argument(
        "--limit", type=int, default=None, help="only the N most recent rows (still oldest first)"
    )


@command("history", help="the agent's audit run log, oldest first", configure=_configure_history)
def _history(ctx: Context) -> int:
    limit = ctx.args.limit
    if limit is not None and limit < 1:
        raise UsageError("--limit must be >= 1")
    key = agent_key(ctx)
    state = ctx.state()

    def skip(exc: UnreadableItem) -> None:
        ctx.stderr.write(f"warning: skipped an unreadable run: {exc}\n")

    if limit is None:
        rows = state.read_runlog(key, newest_first=False, on_unreadable=skip)
    else:
        rows = list(reversed(state.read_runlog(key, limit=limit, on_unreadable=skip)))
    if not rows:
        ctx.stderr.write(f"No runs recorded for {key}.\n")
        return EXIT_OK
    ctx.print(
        out.render_rows(
            rows,
            columns=_run_columns(),
            fmt=ctx.output,
            to_object=lambda r: {"key": r.key, **r.to_json()},
            to_name=lambda r: f"{r.key}#{r.seq}",
        )
    )
    return EXIT_OK


# ------------------------------------------------------------- restart and rollback (CAS)


def _with_annotations(obj: StoredObject, annotations: Mapping[str, str]) -> Desired:
    return Desired(
        kind=KIND,
        namespace=obj.namespace,
        name=obj.name,
        spec=obj.spec,
        labels=obj.labels,
        annotations=annotations,
    )


def _configure_restart(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="agent name")
    add_namespace(p)


@command(
    "restart",
    help="force a new deployment of an agent (annotation in the manifest, no spec change)",
    configure=_configure_restart,
)
def _restart(ctx: Context) -> int:
    namespace, name = ctx.args.namespace, ctx.args.name
    key = object_key(KIND, namespace, name)
    stamp = iso_ms(ctx.wall_clock())

    def change(store: DesiredStateStore) -> Any:
        obj = require_agent(store, namespace, name)
        if obj.deleted:
            raise OperationRefused(f"{namespace}/{name} is being deleted; nothing to restart")
        notes = {**obj.annotations, RESTART_ANNOTATION: stamp}
        return store.apply(_with_annotations(obj, notes))

    result = compare_and_swap(ctx, key, change)
    note = "" if result.outcome != "unchanged" else " (already requested at this time)"
    ctx.print(f"{SERVICE_RESOURCE}/{name} restarted{note}")
    return EXIT_OK


def _configure_rollback(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="agent name")
    add_namespace(p)
    p.add_argument(
        "--to-generation",
        type=int,
        required=True,
        metavar="N",
        help="re-apply generation N's stored spec as a new generation",
    )


def _stored_generations(store: DesiredStateStore, key: str) -> list[int]:
    return sorted({r.generation for r in store.history(key) if r.generation and not r.deleted})


@command(
    "rollback",
    help="re-apply a stored generation's spec as a new generation",
    configure=_configure_rollback,
)
def _rollback(ctx: Context) -> int:
    from oab.controller.adapters.store import desired_from
    from oab.controller.api.document import parse_document
    from oab.controller.api.service import OABService

    namespace, name, wanted = ctx.args.namespace, ctx.args.name, ctx.args.to_generation
    key = object_key(KIND, namespace, name)

    def change(store: DesiredStateStore) -> Any:
        current = require_agent(store, namespace, name)
        if current.deleted:
            raise OperationRefused(f"{namespace}/{name} is being deleted; apply it again instead")
        if current.owner:
            raise OperationRefused(
                f"{namespace}/{name} is owned by fleet {current.owner!r}: roll back through the "
                f"fleet (re-apply the fleet manifest that held the wanted agent spec)"
            )
        try:
            old = store.get_generation(key, wanted)
        except NotFoundError:
            known = ", ".join(str(g) for g in _stored_generations(store, key)) or "none"
            raise NotFoundError(
                f"{namespace}/{name}: generation {wanted} not found (stored generations: {known})"
            ) from None
        # Validate the old spec against today's schema with today's identity and labels: a
        # spec the current controller would refuse is reported now, not parked later.
        document = {
            "apiVersion": current.document.get("apiVersion"),
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(current.labels),
                "annotations": dict(current.annotations),
            },
            "spec": dict(old.spec),
        }
        parsed = parse_document(document)
        assert isinstance(parsed, OABService)
        return current.generation, store.apply(desired_from(parsed))

    before, result = compare_and_swap(ctx, key, change)
    if result.outcome == "unchanged":
        ctx.print(
            f"{SERVICE_RESOURCE}/{name} unchanged: generation {before} already has generation "
            f"{wanted}'s spec"
        )
    else:
        ctx.print(
            f"{SERVICE_RESOURCE}/{name} rolled back to generation {wanted}'s spec "
            f"as generation {result.generation}"
        )
    return EXIT_OK


# -------------------------------------------------------------------------------- leader


class _WallClock:
    """The controller's :class:`~oab.controller.base.clock.Clock` over the context's injected
    wall clock (ages are display only); handed to the leader's and the queue's readers."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def time(self) -> float:
        """The context's wall clock."""
        return self._wall()

    def sleep(self, seconds: float) -> None:
        """``time.sleep(seconds)``."""
        time.sleep(max(0.0, seconds))


def _configure_leader(p: argparse.ArgumentParser) -> None:
    add_output(p, ["wide", "json", "yaml"])
    p.add_argument("--lease", default=DEFAULT_LEASE, help=f"lease name (default {DEFAULT_LEASE})")


@command(
    "leader", help="show the controller's leadership lease as stored", configure=_configure_leader
)
def _leader(ctx: Context) -> int:
    from oab.leader.status import describe

    info = describe(
        ctx.client("dynamodb"),
        ctx.settings.tables.lease,
        ctx.args.lease,
        clock=_WallClock(ctx.wall_clock),
    )
    # ``.get``: a lease item that does not decode is described with fewer fields, not a crash.
    columns = [
        out.Column("LEASE", lambda i: i.get("lease")),
        out.Column("HOLDER", lambda i: i.get("holder")),
        out.Column("EPOCH", lambda i: i.get("epoch")),
        out.Column(
            "RENEWED",
            lambda i: None if i.get("renewed_age_s") is None else f"{i['renewed_age_s']:.1f}s ago",
        ),
        out.Column(
            "DURATION",
            lambda i: None if i.get("lease_duration_s") is None else f"{i['lease_duration_s']:g}s",
        ),
        # Only when the stored item is unreadable or its duration was clamped (leader/status.py).
        *([out.Column("PROBLEM", lambda i: i.get("problem"))] if info.get("problem") else []),
        out.Column("RENEWED-AT", lambda i: i.get("renewed_at"), wide_only=True),
        out.Column("ACQUIRED-AT", lambda i: i.get("acquired_at"), wide_only=True),
        out.Column("TRANSITIONS", lambda i: i.get("transitions"), wide_only=True),
        out.Column("REVISION", lambda i: i.get("revision"), wide_only=True),
    ]
    ctx.print(
        out.render_rows(
            [info],
            columns=columns,
            fmt=ctx.output,
            to_object=lambda i: i,
            to_name=lambda i: f"lease/{i.get('lease', ctx.args.lease)}",
            single=True,
        )
    )
    return EXIT_OK


# --------------------------------------------------------------------------------- queue


def _work_queue(ctx: Context) -> Any:
    from oab.queue.workqueue import WorkQueue

    # Default QueueConfig: its shard count (4) must match the daemon's ``queue_shards`` for the
    # ready-index attribute ``retry`` writes (a larger daemon count still finds the row).
    return WorkQueue(
        ctx.client("dynamodb"), ctx.settings.tables.queue, clock=_WallClock(ctx.wall_clock)
    )


def _configure_queue(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "words",
        nargs="*",
        metavar="[retry KEY]",
        help="no arguments: list the work units; retry KEY: make a parked unit ready now",
    )
    add_namespace(p)
    add_output(p, ["wide", "json", "yaml"])


def _queue_columns(ctx: Context) -> list[out.Column]:
    # Over the rows' operator views (``as_json``), which unreadable rows have too (state
    # ``corrupt``, the problem as the last error).
    return [
        out.Column("KEY", lambda r: r["key"]),
        out.Column("STATE", lambda r: r["state"] + ("*" if r["dirty"] else "")),
        out.Column("GEN", lambda r: r["generation"]),
        out.Column("TOKEN", lambda r: r["token"]),
        out.Column("ATTEMPTS", lambda r: r["attempts"]),
        out.Column("READY-AT", lambda r: relative(ctx, r["ready_at"])),
        out.Column("OWNER", lambda r: r["owner"]),
        out.Column("LAST-ERROR", lambda r: r["last_error"]),
        out.Column("REASON", lambda r: r["reason"], wide_only=True),
        out.Column("CLAIM-DEADLINE", lambda r: iso_s(r["claim_deadline"]), wide_only=True),
        out.Column("COMPLETED-GEN", lambda r: r["completed_generation"], wide_only=True),
    ]


@contextmanager
def _queue_errors() -> Iterator[None]:
    """Turn ``oab.queue`` errors into controller errors so ``cli`` maps them to exit codes."""
    from oab.queue.errors import KeyNotFound, QueueError

    try:
        yield
    except KeyNotFound as exc:
        raise NotFoundError(f"work unit {exc.key}") from exc
    except QueueError as exc:
        raise WorkQueueError(str(exc), retryable=exc.retryable) from exc


def _queue_key(ctx: Context, words: Sequence[str]) -> str:
    if len(words) != 1:
        raise UsageError("usage: oabctl queue retry KEY (KEY is ns/name, or NAME with -n NS)")
    key = words[0]
    return key if "/" in key else f"{ctx.args.namespace}/{key}"


@command(
    "queue",
    help="list the work queue, or retry a parked work unit (queue retry KEY)",
    configure=_configure_queue,
)
def _queue(ctx: Context) -> int:
    words = list(ctx.args.words)
    queue = _work_queue(ctx)
    if words and words[0] == "retry":
        key = _queue_key(ctx, words[1:])
        with _queue_errors():
            row = queue.retry(key)
        ctx.print(f'workunit "{row.key}" retried: {row.state.value}, attempts reset')
        return EXIT_OK
    if words:
        raise UsageError(f"unknown queue action {words[0]!r}; use: oabctl queue [retry KEY]")
    with _queue_errors():
        rows = [r.as_json() for r in queue.scan()]
    if not rows:
        ctx.stderr.write("No work units.\n")
        return EXIT_OK
    ctx.print(
        out.render_rows(
            rows,
            columns=_queue_columns(ctx),
            fmt=ctx.output,
            to_object=lambda r: r,
            to_name=lambda r: f"workunit/{r['key']}",
        )
    )
    return EXIT_OK


#: This group's commands, in the order ``oabctl --help`` lists them (sorted there by name).
COMMANDS: tuple[Command, ...] = (_describe, _history, _restart, _rollback, _leader, _queue)
