"""Self-test of the invariant checker: planted bad evidence must be caught, clean evidence not.

A checker that never reports anything proves nothing. Each case below builds the smallest
synthetic history (proxy events, audit rows, statuses, ECS state, logs) that breaks one
invariant, and names the checker *branch* (``invariants.BRANCHES``) that must report it; the clean
history must give no violation at all. Every branch has at least one case, and
``tests/test_chaos_checker_meta.py`` switches each branch off in turn and requires this self-test
to fail: a branch no planted case depends on would be dead weight, or a hole.

Run by ``python chaos/run.py --self-test [--disable BRANCH ...]`` (no emulator needed; the CI smoke
test runs it).

The clean history: the leader (slot p0, epoch 1) enqueues the agent; a worker of replica r1
(slot p1) claims it (token c1), registers the task definition and creates the service, and
commits Pending with both calls audited; a worker of r2 (p2) claims it again (c2) and commits
Running; then r2 leads in epoch 2 and the deposed leader's late enqueue is rejected. For the
bad-data branches it also holds a poison scenario's clean evidence: an unreadable lease item
planted at 13 s (a standby waits 5 s on it), first answered to r2 at 13.51 s and replaced by r2's
epoch-2 acquisition at 20 s; a poisoned agent parked with the reason and detail its kind
documents, shown by ``oabctl get`` and counted; a snapshot record audited as failed; every
replica exited 0 on the final SIGTERM.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from faultproxy import Event
from invariants import AUDIT_CALLS_BYTES, BRANCHES, Checker, LeasePlant, PoisonEvidence, Violation

from oab.controller.base.names import TableNames
from oab.controller.core.status import AgentStatus, AuditRecord, AwsCall

T = TableNames()
KEY = "chaos/a0000"
POISONED = "chaos/a0001"
CANARY = "poison-canary-0123456789abcdef"
#: Timing the lease branches judge by (retry period, call timeout).
RETRY_S = 1.0
CALL_TIMEOUT_S = 1.0
SVC = "oab-chaos-a0000"
SECRET = "planted-0123456789abcdef"
ECS_OPS = ("CreateService", "UpdateService", "RegisterTaskDefinition")

Case = dict[str, Any]


def _ev(proxy: str, op: str, t: float, *, ok: bool = True, rid: str = "", **info: Any) -> Event:
    return Event(
        proxy=proxy,
        service="ecs" if op in ECS_OPS else "dynamodb",
        op=op,
        t_start=t,
        t_fwd=t,
        t_done=t + 0.01,
        status=200 if ok else 400,
        error="" if ok else info.pop("error", "ConditionalCheckFailedException"),
        delivered=True,
        request_id=rid,
        info=info,
    )


def _ecs(proxy: str, op: str, t: float, rid: str, **info: Any) -> Event:
    if op == "RegisterTaskDefinition":
        info.setdefault("family", SVC)
        info.setdefault("generation", 1)
    else:
        info.setdefault("service", SVC)
    return _ev(proxy, op, t, rid=rid, mutation=True, **info)


def _lease(proxy: str, t: float, holder: str, epoch: int) -> Event:
    return _ev(proxy, "PutItem", t, puts=[{"table": T.lease, "holder": holder, "epoch": epoch}])


def _enqueue(proxy: str, t: float, epoch: int, *, ok: bool = True, version: int = 1) -> Event:
    return _ev(
        proxy,
        "TransactWriteItems",
        t,
        ok=ok,
        puts=[{"table": T.queue, "pk": f"unit#{KEY}", "state": "ready", "version": version}],
        fences=[{"table": T.lease, "epoch": str(epoch), "holder": "r0-1"}],
    )


def _claim(proxy: str, t: float, owner: str, token: str, version: int) -> Event:
    """A claim (or heartbeat): the row in flight under ``token``, written at ``version``."""
    put = {
        "table": T.queue,
        "pk": f"unit#{KEY}",
        "state": "in_flight",
        "owner": owner,
        "claim_token": token,
        "version": version,
        "cond_version": version - 1,
    }
    return _ev(proxy, "PutItem", t, puts=[put])


def _outcome(proxy: str, t: float, version: int, *, seq: int | None) -> Event:
    """A claim's outcome (done), with the audit row ``seq`` in the same transaction."""
    puts: list[dict[str, Any]] = [
        {
            "table": T.queue,
            "pk": f"unit#{KEY}",
            "state": "done",
            "version": version,
            "cond_version": version - 1,
        }
    ]
    if seq is not None:
        puts.append({"table": T.runlog, "pk": KEY, "seq": seq})
    return _ev(proxy, "TransactWriteItems" if seq else "PutItem", t, puts=puts)


def _row(
    seq: int,
    frm: str | None,
    to: str,
    *,
    epoch: int = 1,
    calls: Iterable[tuple[str, str]] = (),
) -> AuditRecord:
    return AuditRecord(
        key=KEY,
        seq=seq,
        run_id=f"run{seq}",
        generation=1,
        token="tok",
        replica="r1-1",
        epoch=epoch,
        trace_id="",
        span_id="",
        from_phase=frm,  # type: ignore[arg-type]
        to_phase=to,  # type: ignore[arg-type]
        calls=tuple(AwsCall(action=a, target=SVC, request_id=rid) for a, rid in calls),
        outcome="done",
        error="",
        duration_ms=1,
        at=1_800_000_000.0,
    )


CREATE_CALLS = (("ecs:RegisterTaskDefinition", "req-td"), ("ecs:CreateService", "req-cs"))


def clean() -> Case:
    """A history that breaks nothing (see the module docstring)."""
    events = [
        _lease("p0", 1.0, "r0-1", 1),
        _enqueue("p0", 2.0, 1, version=1),
        _claim("p1", 3.0, "r1-1/w0", "c1", 2),
        _ecs("p1", "RegisterTaskDefinition", 4.0, "req-td"),
        _ecs("p1", "CreateService", 5.0, "req-cs", client_token="tok-1"),
        _outcome("p1", 6.0, 3, seq=1),
        _claim("p2", 7.0, "r2-1/w0", "c2", 4),
        _outcome("p2", 8.0, 5, seq=2),
        _lease("p2", 20.0, "r2-1", 2),
        _enqueue("p0", 21.0, 1, ok=False),  # the deposed leader's enqueue, rejected
        _ev("p2", "GetItem", 13.5, table=T.lease),  # the planted lease, first seen
    ]
    audit = {KEY: [_row(1, None, "Pending", calls=CREATE_CALLS), _row(2, "Pending", "Running")]}
    statuses = {KEY: AgentStatus(key=KEY, phase="Running", observed_generation=1, audit_seq=2)}
    poison = PoisonEvidence(
        healthy={KEY: ("Running", 1)},
        healthy_generation={KEY: 1},
        final={KEY: ("Running", 1)},
        final_generation={KEY: 1},
        expected_reason={POISONED: "CorruptRow"},
        expected_detail={POISONED: "attempts"},
        parked_reason={POISONED: "CorruptRow"},
        parked_error={POISONED: "CorruptRow: attempts: expected a number"},
        shown={POISONED: "work parked: CorruptRow: attempts: expected a number"},
        planted={("queue", "row"): 1},
        counted={("queue", "row"): 1.0},
        records={"20290101T000000.000Z-big0": "failed: unreadable snapshot record: too big"},
        canaries=[CANARY],
        exits={"r0-1": 0, "r1-1": 0, "r2-1": 0},
        audit_calls_bytes={KEY: 2000},
        leases=[LeasePlant(what="lease-garbage", t_plant=13.0, epoch=None, wait_s=5.0)],
    )
    return {
        "events": events,
        "audit": audit,
        "statuses": statuses,
        "services": [SVC],
        "active": {SVC: 1},
        "blobs": {},
        "logs": {},
        "poison": poison,
        "texts": {"audit log": "no planted text here"},
    }


def check(case: Case, *, disabled: Iterable[str] = ()) -> list[Violation]:
    """Every violation the checker reports for ``case`` with ``disabled`` branches off."""
    checker = Checker(
        events=case["events"],
        tables=T,
        slot_of={"r0-1": "p0", "r1-1": "p1", "r2-1": "p2"},
        agents={KEY: 1},
        planted=[SECRET],
        disabled=disabled,
    )
    checker.check_stale_epoch(case["audit"])
    checker.check_claims(case["audit"])
    checker.check_observed(case["statuses"])
    checker.check_ecs(
        case["audit"],
        services=case["services"],
        active_revisions=case["active"],
        generations_applied={KEY: {1}},
    )
    checker.check_audit(case["audit"], case["statuses"])
    with tempfile.TemporaryDirectory() as tmp:
        logs = []
        for name, text in case["logs"].items():
            path = Path(tmp) / name
            path.write_text(text)
            logs.append(path)
        checker.check_secrets(case["blobs"], logs)
        ev: PoisonEvidence = case["poison"]
        checker.check_loops(ev.exits, logs, died=ev.died)
        checker.check_lease(ev.leases, retry_s=RETRY_S, call_timeout_s=CALL_TIMEOUT_S)
        checker.check_poison(ev, case["texts"])
    return checker.violations


def _mutate(fn: Callable[[Case], None]) -> Callable[[], Case]:
    def build() -> Case:
        case = clean()
        fn(case)
        return case

    return build


def _status(case: Case, **changes: Any) -> None:
    case["statuses"][KEY] = replace(case["statuses"][KEY], **changes)


def _rows(case: Case) -> list[AuditRecord]:
    rows: list[AuditRecord] = case["audit"][KEY]
    return rows


def _poison(case: Case, **changes: Any) -> None:
    case["poison"] = replace(case["poison"], **changes)


def _lease_plant(case: Case, **changes: Any) -> None:
    (plant,) = case["poison"].leases
    _poison(case, leases=[replace(plant, **changes)])


def _same_replica_takeover(case: Case) -> None:
    """r1's worker w0 loses claim c1 to w1 of the same replica, then still calls ECS."""
    case["events"] = [
        _lease("p0", 1.0, "r0-1", 1),
        _enqueue("p0", 2.0, 1, version=1),
        _claim("p1", 3.0, "r1-1/w0", "c1", 2),
        _ecs("p1", "RegisterTaskDefinition", 4.0, "req-td"),
        _claim("p1", 4.5, "r1-1/w1", "c1b", 3),  # expired and taken over inside r1
        _ecs("p1", "CreateService", 5.0, "req-cs", client_token="tok-1"),
        _ecs("p1", "UpdateService", 5.5, "req-zombie"),  # w0, acting on its dead claim
        _outcome("p1", 6.0, 4, seq=1),  # w1's run commits; its row lists its own calls only
        _claim("p2", 7.0, "r2-1/w0", "c2", 5),
        _outcome("p2", 8.0, 6, seq=2),
        _lease("p2", 20.0, "r2-1", 2),
    ]


#: Case name -> (the branch that must report it, the case).
CASES: dict[str, tuple[str, Callable[[], Case]]] = {
    "stale enqueue accepted": (
        "stale-epoch/fenced-write-after-newer-epoch",
        _mutate(lambda c: c["events"].__setitem__(9, _enqueue("p0", 21.0, 1))),
    ),
    "audit epoch that enqueued nothing": (
        "stale-epoch/audit-epoch-without-enqueue",
        _mutate(lambda c: _rows(c).__setitem__(1, _row(2, "Pending", "Running", epoch=7))),
    ),
    "ECS call before any claim": (
        "claims/ecs-call-before-any-claim",
        _mutate(lambda c: c["events"].insert(1, _ecs("p1", "UpdateService", 1.5, "req-early"))),
    ),
    "ECS call after the claim was taken over by another replica": (
        "claims/ecs-call-without-live-claim",
        _mutate(lambda c: c["events"].insert(4, _claim("p2", 4.5, "r2-1/w1", "c9", 3))),
    ),
    "ECS call after completion": (
        "claims/ecs-call-without-live-claim",
        _mutate(lambda c: c["events"].insert(6, _ecs("p1", "UpdateService", 6.5, "req-late"))),
    ),
    "ECS call by a worker whose claim another worker of its replica took over": (
        "claims/ecs-call-outside-the-claims-run",
        _mutate(_same_replica_takeover),
    ),
    "missing status": (
        "observed/missing-status",
        _mutate(lambda c: c["statuses"].clear()),
    ),
    "generation never observed": (
        "observed/not-observed",
        _mutate(lambda c: _status(c, observed_generation=0, phase="Pending")),
    ),
    "Failed without an error": (
        "observed/not-observed",
        _mutate(lambda c: _status(c, phase="Failed", last_error="")),
    ),
    "no service": ("one-service/agent-service-count", _mutate(lambda c: c["services"].clear())),
    "two services": (
        "one-service/agent-service-count",
        _mutate(lambda c: c["services"].append(SVC)),
    ),
    "a service of no agent": (
        "one-service/foreign-service",
        _mutate(lambda c: c["services"].append("oab-chaos-stray")),
    ),
    "duplicate create refused": (
        "one-service/duplicate-create-refused",
        _mutate(
            lambda c: c["events"].insert(
                5,
                _ev(
                    "p1",
                    "CreateService",
                    5.5,
                    ok=False,
                    error="InvalidParameterException",
                    mutation=True,
                    service=SVC,
                ),
            )
        ),
    ),
    "two creates with different client tokens": (
        "one-service/create-client-tokens",
        _mutate(
            lambda c: c["events"].insert(
                5, _ecs("p1", "CreateService", 5.2, "req-cs2", client_token="tok-2")
            )
        ),
    ),
    "service missing from the audit log": (
        "one-service/audited-creates",
        _mutate(
            lambda c: _rows(c).__setitem__(0, _row(1, None, "Pending", calls=CREATE_CALLS[:1]))
        ),
    ),
    "two audited creates": (
        "one-service/audited-creates",
        _mutate(
            lambda c: _rows(c).__setitem__(
                1, _row(2, "Pending", "Running", calls=(("ecs:CreateService", "req-x"),))
            )
        ),
    ),
    "second revision registered for a generation": (
        "one-revision/registered-per-generation",
        _mutate(
            lambda c: c["events"].insert(4, _ecs("p1", "RegisterTaskDefinition", 4.2, "req-td2"))
        ),
    ),
    "two audited registrations for a generation": (
        "one-revision/audited-per-generation",
        _mutate(
            lambda c: _rows(c).__setitem__(
                1,
                _row(2, "Pending", "Running", calls=(("ecs:RegisterTaskDefinition", "req-y"),)),
            )
        ),
    ),
    "more ACTIVE revisions than generations": (
        "one-revision/active-revisions",
        _mutate(lambda c: c["active"].__setitem__(SVC, 2)),
    ),
    "audit gap": (
        "audit/sequence",
        _mutate(lambda c: _rows(c).__setitem__(1, _row(3, "Pending", "Running"))),
    ),
    "status audit_seq that disagrees with the rows": (
        "audit/status-seq",
        _mutate(lambda c: _status(c, audit_seq=3)),
    ),
    "row that does not start where the previous ended": (
        "audit/phase-continuity",
        _mutate(lambda c: _rows(c).__setitem__(1, _row(2, "Running", "Running"))),
    ),
    "first row that starts in a phase": (
        "audit/first-row",
        _mutate(
            lambda c: _rows(c).__setitem__(0, _row(1, "Pending", "Pending", calls=CREATE_CALLS))
        ),
    ),
    "transition without its row": (
        "audit/status-phase",
        _mutate(lambda c: _status(c, phase="Failed", last_error="boom")),
    ),
    "secret in an artifact": (
        "secrets/blob",
        _mutate(lambda c: c["blobs"].__setitem__("s3://b/artifacts/x", f"token={SECRET}")),
    ),
    "secret in a replica log": (
        "secrets/replica-log",
        _mutate(lambda c: c["logs"].__setitem__("r1-1.log", f'{{"msg": "x", "v": "{SECRET}"}}\n')),
    ),
    "secret in a proxied response": (
        "secrets/proxied-response",
        _mutate(lambda c: c["events"][4].secret_hits.append(SECRET)),
    ),
    "a replica that exited 70 on SIGTERM": (
        "loops/replica-exit",
        _mutate(lambda c: _poison(c, exits={**c["poison"].exits, "r1-1": 70})),
    ),
    "a replica that ended before the scenario stopped it": (
        "loops/replica-exit",
        _mutate(lambda c: _poison(c, died={"r2-1": 70})),
    ),
    "a replica that logged a dead control loop": (
        "loops/loop-ended-logged",
        _mutate(
            lambda c: c["logs"].__setitem__(
                "r1-1.log",
                '{"level": "CRITICAL", "msg": "control loop(s) ended: w0; exiting 70"}\n',
            )
        ),
    ),
    "an acquisition at or below the planted epoch": (
        "lease/epoch-went-backwards",
        _mutate(lambda c: _lease_plant(c, epoch=2)),
    ),
    "a term that repeats an epoch with no unreadable lease item in between": (
        "lease/epoch-went-backwards",
        _mutate(lambda c: c["events"].append(_lease("p1", 22.0, "r1-1", 2))),
    ),
    "a planted lease replaced before a standby saw it unchanged for its wait": (
        "lease/replaced-too-early",
        _mutate(lambda c: _lease_plant(c, wait_s=10.0)),
    ),
    "no leader within the bound after a planted lease": (
        "lease/no-leader-within-bound",
        _mutate(lambda c: _lease_plant(c, wait_s=1.0)),
    ),
    "a healthy agent held up by the poison": (
        "poison/healthy-agent-not-running",
        _mutate(lambda c: _poison(c, healthy={KEY: ("Pending", 0)})),
    ),
    "an agent the runbook's repair did not bring back": (
        "poison/not-recovered",
        _mutate(lambda c: _poison(c, final={KEY: ("Failed", 1)})),
    ),
    "a poisoned agent parked with another reason": (
        "poison/parked-with-wrong-reason",
        _mutate(lambda c: _poison(c, parked_reason={POISONED: "CorruptStatus"})),
    ),
    "a poisoned agent refused by another guard than the one under test": (
        "poison/parked-with-wrong-reason",
        _mutate(lambda c: _poison(c, parked_error={POISONED: "CorruptRow: token: missing"})),
    ),
    "a parked reason `oabctl get` does not show": (
        "poison/reason-not-shown",
        _mutate(lambda c: _poison(c, shown={POISONED: "work parked: "})),
    ),
    "a planted item the poison counter missed": (
        "poison/not-counted",
        _mutate(lambda c: _poison(c, counted={})),
    ),
    "a snapshot record not audited as failed": (
        "poison/snapshot-record-not-audited",
        _mutate(lambda c: _poison(c, records={"20290101T000000.000Z-big0": ""})),
    ),
    "agent-written text copied into the audit log": (
        "poison/untrusted-text-copied",
        _mutate(lambda c: c["texts"].__setitem__("audit log", f'"error": "{CANARY}"')),
    ),
    "an audit row call list over its budget": (
        "poison/audit-row-over-budget",
        _mutate(lambda c: _poison(c, audit_calls_bytes={KEY: AUDIT_CALLS_BYTES + 1})),
    ),
}


def run(*, disabled: Iterable[str] = ()) -> tuple[int, list[str]]:
    """Every case with ``disabled`` branches off: (checks made, failure lines)."""
    off = frozenset(disabled)
    failures: list[str] = []
    found = check(clean(), disabled=off)
    if found:
        failures.append(f"clean history reported {[v.to_json() for v in found]}")
    for name, (branch, build) in CASES.items():
        got = {v.branch for v in check(build(), disabled=off)}
        if branch not in got:
            failures.append(f"{name}: expected {branch}, got {sorted(got)}")
    uncovered = sorted(set(BRANCHES) - {branch for branch, _ in CASES.values()})
    if uncovered:
        failures.append(f"branches no case plants: {uncovered}")
    return len(CASES) + 1, failures


def main(*, disabled: Iterable[str] = ()) -> int:
    """Run every case; returns 0 when each is caught and the clean history passes."""
    total, failures = run(disabled=disabled)
    for line in failures:
        print(f"self-test FAILED: {line}")
    print(f"self-test: {total - len(failures)}/{total} checks passed")
    return 1 if failures else 0
