"""``oabctl snapshot NAME``: archive an agent's HOME to its ``bootstrapFrom`` location now.

Listed in ``COMMANDS`` (offered by
:data:`oab.controller.cli.main.GROUPS`).

Design
------
- The command talks to the agent's snapshot sidecar only through the control-plane bucket
  (:mod:`oab.controller.agent.sidecar`): :func:`request_snapshot` creates the one pending request
  (``If-None-Match: *``), :func:`wait_snapshot` lists the agent's records until the answer
  appears. It never calls ECS and never reads HOME or a secret.
- Preconditions are checked from the desired state first: the agent must exist, not be
  terminating, and have ``spec.bootstrapFrom`` (snapshots are new versions of that object, so
  the next start restores them). An agent that is not ``Running`` gets a warning: its request is
  answered once a task runs, which may be after ``--timeout``.
- After a successful snapshot the command *nudges* the controller: a change record of kind
  ``apply`` for the current generation with version id ``snapshot:<record id>`` (a new
  idempotency token, so the scheduler enqueues one run; reconcile is level based, so the run
  changes nothing in ECS). That run copies the new snapshot record into the agent's audit run
  log (:mod:`oab.controller.adapters.snapshots`). A failed nudge only delays that: it is a warning.
- ``--cancel`` deletes a pending request (a stale one, e.g. left by an agent that stopped). The
  delete is unconditional: a sidecar that already relayed the request still answers it.

Exit codes: 0 uploaded (or requested, with ``--no-wait``; or cancelled); 1 the agent cannot be
snapshotted, the sidecar recorded a failure, or no answer within ``--timeout``; 3 AWS errors;
4 another request is already pending (it is printed; ``--cancel`` removes it).

Time model: the ``--timeout`` deadline uses the monotonic clock (inside :func:`wait_snapshot`);
ages shown use the context's wall clock.
"""

from __future__ import annotations

import argparse
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from oab.controller.adapters.changes import ChangeLog, ChangeLogError
from oab.controller.adapters.snapshots import request_snapshot, wait_snapshot
from oab.controller.adapters.store import NotFoundError, StoredObject, object_key
from oab.controller.api.service import AgentKey
from oab.controller.base.errors import classify_aws
from oab.controller.base.names import (
    SERVICE_RESOURCE,
    SNAPSHOT_NUDGE_PREFIX,
    snapshot_request_key,
)
from oab.controller.cli import output as out
from oab.controller.cli.common import parse_duration
from oab.controller.cli.context import Context
from oab.controller.cli.ops import OperationRefused
from oab.controller.cli.registry import EXIT_CONFLICT, EXIT_INVALID, EXIT_OK, Command, command
from oab.controller.core.snapshot import (
    SnapshotAlreadyRequested,
    SnapshotFailed,
    SnapshotRecord,
    SnapshotRequest,
    SnapshotTimeout,
)

__all__ = ["COMMANDS", "describe_record", "nudge"]


def describe_record(record: SnapshotRecord) -> str:
    """One human line for an uploaded record (pure)."""
    version = record.version_id or "<unversioned bucket>"
    return (
        f"snapshot {record.id} of {record.agent} uploaded to {record.location}"
        f" version {version} ({record.size_bytes} bytes in {record.members} entries,"
        f" {record.excluded} excluded)"
    )


def nudge(changes: ChangeLog, obj: StoredObject, record: SnapshotRecord) -> None:
    """Record a change so the controller runs once for the agent and audits ``record``."""
    changes.record(
        obj.key,
        generation=obj.generation,
        kind="apply",
        version_id=f"{SNAPSHOT_NUDGE_PREFIX}{record.id}",
    )


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="agent name")
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    p.add_argument(
        "--timeout",
        default="5m",
        help="how long to wait for the sidecar's answer (default 5m; the sidecar polls for "
        "requests every 60 s by default)",
    )
    p.add_argument("--no-wait", action="store_true", help="request and return at once")
    p.add_argument(
        "--cancel", action="store_true", help="delete the pending request (e.g. a stale one)"
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        help="seconds between listings of the agent's snapshot records (default 2)",
    )
    p.add_argument("-o", "--output", choices=["json", "yaml"], default=None, help="output format")


def _structured(ctx: Context, payload: object) -> None:
    if ctx.output is out.OutputFormat.JSON:
        ctx.print(out.to_json(payload))
    else:
        ctx.print(out.to_yaml(payload).rstrip("\n"))


def _request_json(request: SnapshotRequest) -> dict[str, Any]:
    return {"agent": request.agent, "id": request.id, "requestedAt": request.requested_at}


def _record_json(record: SnapshotRecord) -> dict[str, Any]:
    return {
        "agent": record.agent,
        "id": record.id,
        "trigger": record.trigger,
        "status": record.status,
        "location": record.location,
        "versionId": record.version_id,
        "members": record.members,
        "sizeBytes": record.size_bytes,
        "excluded": record.excluded,
        "error": record.error,
    }


def _age(ctx: Context, wall: float) -> str:
    return out.format_age(ctx.wall_clock() - wall)


def _cancel(ctx: Context, key: AgentKey, bucket: str) -> int:
    s3 = ctx.client("s3")
    try:
        body = s3.get_object(Bucket=bucket, Key=snapshot_request_key(key))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            ctx.print(f"no pending snapshot request for {key}")
            return EXIT_OK
        raise classify_aws(exc, operation="GetObject") from exc
    pending = SnapshotRequest.from_json(body)
    try:
        s3.delete_object(Bucket=bucket, Key=snapshot_request_key(key))
    except (ClientError, BotoCoreError) as exc:
        raise classify_aws(exc, operation="DeleteObject") from exc
    ctx.print(
        f"cancelled snapshot request {pending.id} of {key}"
        f" (requested {_age(ctx, pending.requested_at)} ago)"
    )
    return EXIT_OK


def _timeout_hints(ctx: Context, key: AgentKey) -> list[str]:
    status = ctx.state().read_status(key)
    phase = status.phase or "Pending"
    running = len(status.task_arns)
    hints = [f"the agent is {phase} with {running} running task(s)"]
    if phase != "Running" or not running:
        hints[0] += "; only a running task answers a request"
    hints.append(
        "the sidecar checks for requests every OAB_SNAPSHOT_POLL_SECONDS (default 60 s; 0 turns"
        " on-demand snapshots off); see `oabctl logs` for its messages"
    )
    hints.append(
        "the request stays pending until the sidecar answers or expires it (300 s);"
        f" `oabctl snapshot {key.split('/', 1)[1]} -n {key.split('/', 1)[0]} --cancel` removes it"
    )
    return hints


@command(
    "snapshot",
    help="archive an agent's HOME to its bootstrapFrom location now",
    configure=_configure,
)
def _snapshot(ctx: Context) -> int:
    namespace, name = ctx.args.namespace, ctx.args.name
    key = AgentKey(f"{namespace}/{name}")
    bucket = ctx.settings.bucket
    timeout = parse_duration(ctx.args.timeout)
    obj = ctx.store().get(object_key("OABService", namespace, name))
    if obj is None:
        raise NotFoundError(f'{SERVICE_RESOURCE} "{name}" in namespace {namespace}')
    if ctx.args.cancel:
        return _cancel(ctx, key, bucket)
    if obj.deleted:
        raise OperationRefused(f"{key} is being deleted; nothing to snapshot")
    target = obj.spec.get("bootstrapFrom")
    if not target:
        raise OperationRefused(
            f"{key} has no spec.bootstrapFrom: snapshots are written there as a new object "
            "version (and restored from it at the next start); set it, `oabctl apply`, "
            "and try again"
        )
    status = ctx.state().read_status(key)
    if status.phase != "Running":
        ctx.progress(
            f"warning: {key} is {status.phase or 'not reconciled yet'}; the request is answered "
            "once its task runs"
        )
    s3 = ctx.client("s3")
    try:
        request = request_snapshot(s3, bucket, key)
    except SnapshotAlreadyRequested as exc:
        pending = exc.pending
        if ctx.args.output:
            _structured(ctx, {"pending": _request_json(pending)})
        ctx.stderr.write(
            f"error: a snapshot of {key} is already pending (request {pending.id}, requested"
            f" {_age(ctx, pending.requested_at)} ago); wait for it, or remove a stale one with"
            f" `oabctl snapshot {name} -n {namespace} --cancel`\n"
        )
        return EXIT_CONFLICT
    if ctx.args.no_wait:
        if ctx.args.output:
            _structured(ctx, {"request": _request_json(request)})
        else:
            ctx.print(f"snapshot {request.id} of {key} requested (target {target})")
        return EXIT_OK
    ctx.progress(f"snapshot {request.id} of {key} requested; waiting up to {ctx.args.timeout}")
    try:
        record = wait_snapshot(
            s3, bucket, request, timeout=timeout, interval=ctx.args.poll_interval
        )
    except SnapshotFailed as exc:
        if ctx.args.output:
            failed = {"request": _request_json(request), "record": _record_json(exc.record)}
            _structured(ctx, failed)
        ctx.stderr.write(f"error: {exc}\n")
        return EXIT_INVALID
    except SnapshotTimeout as exc:
        ctx.stderr.write(f"error: {exc}\n")
        for hint in _timeout_hints(ctx, key):
            ctx.stderr.write(f"hint: {hint}\n")
        return EXIT_INVALID
    try:
        nudge(
            ctx.state().changes,
            obj,
            record,
        )
    except ChangeLogError as exc:
        ctx.progress(
            f"warning: the snapshot is stored but the controller was not told ({exc}); it"
            " reaches the audit log with the agent's next change"
        )
    if ctx.args.output:
        _structured(ctx, {"request": _request_json(request), "record": _record_json(record)})
    else:
        ctx.print(describe_record(record))
    return EXIT_OK


#: This group's commands, in the order ``oabctl --help`` lists them (sorted there by name).
COMMANDS: tuple[Command, ...] = (_snapshot,)
