"""Self-test of the invariant checker: planted bad evidence must be caught, clean evidence not.

A checker that never reports anything proves nothing. Each case below builds the smallest
synthetic history (proxy events, audit rows, statuses) that breaks exactly one invariant and
asserts the checker names that invariant; the clean history must give no violation at all.
Run by ``python chaos/run.py --self-test`` (no emulator needed; the CI smoke test runs it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from faultproxy import Event
from invariants import Checker, Violation

from oab.controller.status import AgentStatus, AuditRecord, AwsCall
from oab.controller.tables import TableNames

T = TableNames()
KEY = "chaos/a0000"
SVC = "oab-chaos-a0000"


def _ev(proxy: str, op: str, t: float, *, ok: bool = True, **info: Any) -> Event:
    service = "ecs" if op in ("CreateService", "UpdateService", "RegisterTaskDefinition") else ""
    return Event(
        proxy=proxy,
        service=service or "dynamodb",
        op=op,
        t_start=t,
        t_fwd=t,
        t_done=t + 0.01,
        status=200 if ok else 400,
        error="" if ok else info.pop("error", "ConditionalCheckFailedException"),
        info=info,
    )


def _lease(proxy: str, t: float, holder: str, epoch: int) -> Event:
    return _ev(proxy, "PutItem", t, puts=[{"table": T.lease, "holder": holder, "epoch": epoch}])


def _enqueue(proxy: str, t: float, epoch: int, *, ok: bool = True) -> Event:
    return _ev(
        proxy,
        "TransactWriteItems",
        t,
        ok=ok,
        puts=[{"table": T.queue, "pk": f"unit#{KEY}", "state": "ready"}],
        fences=[{"table": T.lease, "epoch": str(epoch), "holder": "r0-1"}],
    )


def _queue(proxy: str, t: float, state: str, owner: str | None) -> Event:
    put: dict[str, Any] = {"table": T.queue, "pk": f"unit#{KEY}", "state": state}
    if owner:
        put["owner"] = owner
    return _ev(proxy, "PutItem", t, puts=[put])


def _row(seq: int, frm: str | None, to: str, *, epoch: int = 1, calls: tuple[str, ...] = ()) -> Any:
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
        calls=tuple(AwsCall(action=c, target=SVC) for c in calls),
        outcome="done",
        error="",
        duration_ms=1,
        at=1_800_000_000.0,
    )


def clean() -> dict[str, Any]:
    """A history that breaks nothing: lease r0, enqueue, claim by r1, ECS calls, completion."""
    events = [
        _lease("p0", 1.0, "r0-1", 1),
        _enqueue("p0", 2.0, 1),
        _queue("p1", 3.0, "in_flight", "r1-1/w0"),
        _ev("p1", "RegisterTaskDefinition", 4.0, mutation=True, family=SVC, generation=1),
        _ev("p1", "CreateService", 5.0, mutation=True, service=SVC, client_token="c1"),
        _queue("p1", 6.0, "done", None),
        _lease("p2", 20.0, "r2-1", 2),
        _enqueue("p0", 21.0, 1, ok=False),  # the deposed leader's enqueue, rejected
    ]
    audit = {
        KEY: [
            _row(1, None, "Pending", calls=("ecs:RegisterTaskDefinition", "ecs:CreateService")),
            _row(2, "Pending", "Running"),
        ]
    }
    statuses = {
        KEY: AgentStatus(key=KEY, phase="Running", observed_generation=1, audit_seq=2),
    }
    return {"events": events, "audit": audit, "statuses": statuses, "services": [SVC]}


def _check(case: dict[str, Any], *, blobs: dict[str, str] | None = None) -> list[Violation]:
    checker = Checker(
        events=case["events"],
        tables=T,
        slot_of={"r0-1": "p0", "r1-1": "p1", "r2-1": "p2"},
        agents={KEY: 1},
        planted=["planted-0123456789abcdef"],
    )
    checker.check_stale_epoch(case["audit"])
    checker.check_claims()
    checker.check_observed(case["statuses"])
    checker.check_ecs(
        case["audit"],
        services=case["services"],
        active_revisions={SVC: 1},
        generations_applied={KEY: {1}},
    )
    checker.check_audit(case["audit"], case["statuses"])
    checker.check_secrets(blobs or {}, [])
    return checker.violations


def _mutate(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    case = clean()
    fn(case)
    return case


CASES: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "stale enqueue accepted": (
        "stale-epoch",
        lambda: _mutate(lambda c: c["events"].__setitem__(7, _enqueue("p0", 21.0, 1))),
    ),
    "audit epoch that enqueued nothing": (
        "stale-epoch",
        lambda: _mutate(
            lambda c: c["audit"][KEY].__setitem__(1, _row(2, "Pending", "Running", epoch=7))
        ),
    ),
    "ECS call after the claim was taken over": (
        "claims",
        lambda: _mutate(lambda c: c["events"].insert(4, _queue("p2", 4.5, "in_flight", "r2-1/w1"))),
    ),
    "ECS call after completion": (
        "claims",
        lambda: _mutate(
            lambda c: c["events"].append(
                _ev("p1", "UpdateService", 7.0, mutation=True, service=SVC)
            )
        ),
    ),
    "generation never observed": (
        "observed",
        lambda: _mutate(
            lambda c: c["statuses"].__setitem__(
                KEY, replace(c["statuses"][KEY], observed_generation=0, phase="Pending")
            )
        ),
    ),
    "two services": ("one-service", lambda: _mutate(lambda c: c["services"].append(SVC))),
    "service missing from the audit log": (
        "one-service",
        lambda: _mutate(
            lambda c: c["audit"][KEY].__setitem__(
                0, _row(1, None, "Pending", calls=("ecs:RegisterTaskDefinition",))
            )
        ),
    ),
    "duplicate create refused": (
        "one-service",
        lambda: _mutate(
            lambda c: c["events"].append(
                _ev(
                    "p1",
                    "CreateService",
                    5.5,
                    ok=False,
                    error="InvalidParameterException",
                    mutation=True,
                    service=SVC,
                )
            )
        ),
    ),
    "second revision for a generation": (
        "one-revision",
        lambda: _mutate(
            lambda c: c["events"].insert(
                4,
                _ev("p1", "RegisterTaskDefinition", 4.2, mutation=True, family=SVC, generation=1),
            )
        ),
    ),
    "audit gap": (
        "audit",
        lambda: _mutate(lambda c: c["audit"][KEY].__setitem__(1, _row(3, "Pending", "Running"))),
    ),
    "transition without its row": (
        "audit",
        lambda: _mutate(
            lambda c: c["statuses"].__setitem__(KEY, replace(c["statuses"][KEY], phase="Failed"))
        ),
    ),
}


def main() -> int:
    """Run every case; returns 0 when each is caught and the clean history passes."""
    failures: list[str] = []
    found = _check(clean())
    if found:
        failures.append(f"clean history reported {[v.to_json() for v in found]}")
    for name, (invariant, build) in CASES.items():
        got = {v.invariant for v in _check(build())}
        if invariant not in got:
            failures.append(f"{name}: expected {invariant}, got {sorted(got)}")
    leaked = clean()
    leaked["events"][4].secret_hits.append("planted-0123456789abcdef")
    if "secrets" not in {v.invariant for v in _check(leaked)}:
        failures.append("secret in a proxied response not reported")
    blob = {"s3://b/artifacts/x": "token=planted-0123456789abcdef"}
    if "secrets" not in {v.invariant for v in _check(clean(), blobs=blob)}:
        failures.append("secret in an artifact not reported")
    for line in failures:
        print(f"self-test FAILED: {line}")
    print(f"self-test: {len(CASES) + 3 - len(failures)}/{len(CASES) + 3} checks passed")
    return 1 if failures else 0
