"""The cost of the PynamoDB models on a 10,000-status resync, against the hand-written codec they
replaced (issue 12: keep the models off the hot resync read if they cost more than ~10 % of it).

Measures, in one run and one process:

1. decode: 10,000 status items (as the controller writes them: a condition, a task ARN, secret
   versions) through the models (``state.status_from_item``) and through the hand-written decoder
   of before (kept below as the baseline, verbatim but for names), best of ``ROUNDS``;
2. encode: the same statuses to items both ways, best of ``ROUNDS``;
3. the resync's status read: the items stored in the emulator, one ``scan_statuses`` (Scan pages +
   decoding) timed, so that the decode difference is shown as a share of the read it sits in.

The emulator is slow next to DynamoDB (its Scan is pure Python), so the share is also shown
against the decode-only time of the hand codec, the lower bound of any resync read. Prints the
figures, then one line of JSON.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from oab.controller.adapters import state
from oab.controller.base.names import STATUS_SORT_KEY, status_partition_key
from oab.controller.core.status import PHASES, AgentStatus, Condition
from oab.controller.core.stored import ERROR_BYTES, Attributes

N = 10_000
ROUNDS = 5


def _statuses() -> list[AgentStatus]:
    return [
        AgentStatus(
            key=f"team-{i % 50}/agent-{i}",
            phase="Running",
            observed_generation=3,
            conditions=(
                Condition(
                    type="Available",
                    status="True",
                    reason="Running",
                    message="service steady",
                    last_transition_time="2027-01-01T00:00:00Z",
                ),
            ),
            task_arns=(f"arn:aws:ecs:us-east-1:123456789012:task/oab/{i:032x}",),
            service_arn=f"arn:aws:ecs:us-east-1:123456789012:service/oab/oab-team-agent-{i}",
            task_definition_arn=f"arn:aws:ecs:us-east-1:123456789012:task-definition/a-{i}:3",
            task_definition_hash="a" * 64,
            last_reconciled="2027-01-01T00:00:00Z",
            last_run_id=f"{i:026d}",
            trace_id="0" * 32,
            secret_versions={"arn:aws:secretsmanager:us-east-1:123456789012:secret:t": "v1"},
            manifest_etag='"0123456789abcdef"',
            audit_seq=7,
        )
        for i in range(N)
    ]


# ----------------------------------------------- the hand-written codec the models replaced


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def hand_status_to_item(status: AgentStatus) -> dict[str, Any]:
    """``state.status_to_item`` before the models."""
    item: dict[str, Any] = {
        "pk": _s(status_partition_key(status.key)),
        "sk": _s(STATUS_SORT_KEY),
        "key": _s(status.key),
        "observed_generation": _n(status.observed_generation),
        "conditions": _s(json.dumps([c.to_json() for c in status.conditions])),
        "task_arns": _s(json.dumps(list(status.task_arns))),
        "service_arn": _s(status.service_arn),
        "task_definition_arn": _s(status.task_definition_arn),
        "task_definition_hash": _s(status.task_definition_hash),
        "last_reconciled": _s(status.last_reconciled),
        "last_error": _s(status.last_error),
        "attempts": _n(status.attempts),
        "last_run_id": _s(status.last_run_id),
        "trace_id": _s(status.trace_id),
        "secret_versions": _s(json.dumps(dict(sorted(status.secret_versions.items())))),
        "watched_secrets": _s(json.dumps(dict(sorted(status.watched_secrets.items())))),
        "restart_marker": _s(status.restart_marker),
        "finalizer_step": _s(status.finalizer_step),
        "manifest_etag": _s(status.manifest_etag),
        "failed_hash": _s(status.failed_hash),
        "audit_seq": _n(status.audit_seq),
        "last_snapshot": _s(status.last_snapshot),
    }
    if status.phase is not None:
        item["phase"] = _s(status.phase)
    return item


def hand_status_from_item(item: Mapping[str, Any]) -> AgentStatus:
    """``state.status_from_item`` before the models."""
    pk = item.get("pk")
    name = pk.get("S") if isinstance(pk, Mapping) else None
    a = Attributes(item, table="state", item=f"{name}/status", reason="CorruptStatus")
    key = a.s("key") or a.s("pk", required=True).removeprefix("agent#")
    phase = a.s("phase") or None
    if phase is not None and phase not in PHASES:
        raise a.error("phase", f"{phase!r} is not one of {', '.join(PHASES)}")
    try:
        conditions = tuple(Condition.from_json(c) for c in a.objects("conditions"))
    except ValueError as exc:
        raise a.error("conditions", str(exc)) from None
    return AgentStatus(
        key=key,
        phase=phase,  # type: ignore[arg-type]
        observed_generation=a.n("observed_generation"),
        conditions=conditions,
        task_arns=tuple(a.strings("task_arns")),
        service_arn=a.s("service_arn"),
        task_definition_arn=a.s("task_definition_arn"),
        task_definition_hash=a.s("task_definition_hash"),
        last_reconciled=a.s("last_reconciled"),
        last_error=a.s("last_error", budget=ERROR_BYTES),
        attempts=a.n("attempts"),
        last_run_id=a.s("last_run_id"),
        trace_id=a.s("trace_id"),
        secret_versions=a.string_map("secret_versions"),
        watched_secrets=a.string_map("watched_secrets"),
        restart_marker=a.s("restart_marker"),
        finalizer_step=a.s("finalizer_step"),
        manifest_etag=a.s("manifest_etag"),
        failed_hash=a.s("failed_hash"),
        audit_seq=a.n("audit_seq"),
        last_snapshot=a.s("last_snapshot"),
    )


# ------------------------------------------------------------------------------- measuring


def _best(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _resync_read(items: list[dict[str, Any]]) -> float:
    from oab.controller.testing import AWS, local_aws

    with local_aws() as emulator:
        os.environ.update(emulator.env())
        aws = AWS(emulator)
        aws.reset()
        ddb = aws.client("dynamodb")
        for start in range(0, len(items), 25):
            batch = [{"PutRequest": {"Item": it}} for it in items[start : start + 25]]
            pending: dict[str, Any] = {aws.tables.state: batch}
            while pending:
                pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems", {})
        started = time.perf_counter()
        found = state.scan_statuses(ddb, aws.tables.state)
        elapsed = time.perf_counter() - started
    assert len(found) == len(items)
    return elapsed


def main() -> None:
    """Measure and print (see the module doc)."""
    statuses = _statuses()
    items = [hand_status_to_item(s) for s in statuses]
    assert [state.status_to_item(s) for s in statuses[:100]] == items[:100]  # same bytes
    assert [state.status_from_item(it) for it in items[:100]] == statuses[:100]

    decode_hand = _best(lambda: [hand_status_from_item(it) for it in items])
    decode_model = _best(lambda: [state.status_from_item(it) for it in items])
    encode_hand = _best(lambda: [hand_status_to_item(s) for s in statuses])
    encode_model = _best(lambda: [state.status_to_item(s) for s in statuses])
    scan = _resync_read(items)
    extra = decode_model - decode_hand
    figures = {
        "statuses": N,
        "decode_hand_s": round(decode_hand, 3),
        "decode_model_s": round(decode_model, 3),
        "decode_ratio": round(decode_model / decode_hand, 2),
        "encode_hand_s": round(encode_hand, 3),
        "encode_model_s": round(encode_model, 3),
        "encode_ratio": round(encode_model / encode_hand, 2),
        "resync_status_read_s": round(scan, 3),
        "decode_extra_share_of_resync_read": round(extra / scan, 3),
    }
    print(f"{N} statuses, best of {ROUNDS}:")
    print(
        f"  decode: hand-written {decode_hand:.3f} s, models {decode_model:.3f} s "
        f"(x{decode_model / decode_hand:.2f})"
    )
    print(
        f"  encode: hand-written {encode_hand:.3f} s, models {encode_model:.3f} s "
        f"(x{encode_model / encode_hand:.2f})"
    )
    print(
        f"  resync status read (emulator Scan + decode): {scan:.3f} s; the models add "
        f"{extra:.3f} s = {100 * extra / scan:.1f} % of it"
    )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
