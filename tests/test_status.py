"""The phase machine, conditions and the atomic status + audit transaction."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest
from botocore.exceptions import ClientError

from oab.controller.adapters import state
from oab.controller.api import service as api
from oab.controller.core import status as st
from oab.controller.testing import AWS


def test_every_listed_transition_is_allowed_and_terminating_is_final() -> None:
    for current, targets in st.ALLOWED_TRANSITIONS.items():
        for target in targets:
            st.check_transition(current, target)
    for target in ("Pending", "Running", "Failed"):
        with pytest.raises(st.IllegalTransition, match="Terminating -> "):
            st.check_transition("Terminating", target)  # type: ignore[arg-type]


def test_condition_keeps_transition_time_while_status_is_unchanged() -> None:
    conds = st.set_condition((), type="Available", status="False", reason="A", message="", now="t1")
    conds = st.set_condition(
        conds, type="Available", status="False", reason="B", message="", now="t2"
    )
    assert conds[0].last_transition_time == "t1"
    assert conds[0].reason == "B"
    conds = st.set_condition(
        conds, type="Available", status="True", reason="C", message="", now="t3"
    )
    assert conds[0].last_transition_time == "t3"


def test_conditions_are_ordered_by_type() -> None:
    conds: tuple[st.Condition, ...] = ()
    for t in reversed(st.CONDITION_TYPES):
        conds = st.set_condition(conds, type=t, status="True", reason="r", message="m", now="t")
    assert [c.type for c in conds] == list(st.CONDITION_TYPES)


def test_the_api_schema_of_a_condition_accepts_what_status_stores_and_shows() -> None:
    # The API models status.conditions (in the JSON Schema); the core keeps the value. One
    # Phase and one condition status are defined (by the API); the shapes must not drift.
    conds = st.set_condition((), type="Available", status="True", reason="R", message="m", now="t")
    conds = st.set_condition(
        conds, type="Degraded", status="Unknown", reason="", message="", now=""
    )
    for cond in conds:
        shown = api.StatusCondition.model_validate({**cond.to_json(), "lastTransitionTime": None})
        assert (shown.type, shown.status, shown.reason) == (cond.type, cond.status, cond.reason)
    assert get_args(api.Phase) == st.PHASES
    assert api.ServiceStatus.model_validate({"phase": "Terminating"}).phase == "Terminating"


def test_status_item_round_trip() -> None:
    conds = st.set_condition((), type="Available", status="True", reason="R", message="m", now="t")
    status = st.AgentStatus(
        key="default/a",
        phase="Running",
        observed_generation=3,
        conditions=conds,
        task_arns=("arn:task/1",),
        secret_versions={"TOKEN": "3"},
        audit_seq=7,
    )
    assert state.status_from_item(state.status_to_item(status)) == status


def _audit(key: str, seq: int, to: st.Phase) -> st.AuditRecord:
    return st.AuditRecord(
        key=key,
        seq=seq,
        run_id=f"run-{seq}",
        generation=1,
        token="tok",
        replica="r1",
        epoch=1,
        trace_id="t" * 32,
        span_id="s" * 16,
        from_phase=None,
        to_phase=to,
        calls=(st.AwsCall(action="ecs:CreateService", target="oab-default-a"),),
        outcome="done",
        error="",
        duration_ms=5,
        at=1_800_000_000.0,
    )


def test_transition_and_audit_row_commit_together_without_gaps(aws: AWS) -> None:
    ddb = aws.client("dynamodb")
    before = st.AgentStatus(key="default/a")
    phases: list[st.Phase] = ["Pending", "Running", "Pending", "Running"]
    for seq, phase in zip(itertools.count(1), phases, strict=False):
        after = st.next_status(before, phase=phase)
        items = state.transition_items(
            state_table=aws.tables.state,
            runlog_table=aws.tables.runlog,
            before=before,
            after=after,
            audit=_audit("default/a", seq, phase),
        )
        ddb.transact_write_items(TransactItems=items)
        before = after
    # A writer that read a stale status (sequence 2) cannot write: neither status nor audit row.
    stale = st.AgentStatus(key="default/a", phase="Running", audit_seq=2)
    items = state.transition_items(
        state_table=aws.tables.state,
        runlog_table=aws.tables.runlog,
        before=stale,
        after=st.next_status(stale, phase="Failed"),
        audit=_audit("default/a", 3, "Failed"),
    )
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(TransactItems=items)
    assert exc.value.response["Error"]["Code"] == "TransactionCanceledException"
    stored = state.read_status(ddb, aws.tables.state, "default/a")
    assert stored.phase == "Running"
    assert stored.audit_seq == 4
    rows = state.read_runlog(ddb, aws.tables.runlog, "default/a", newest_first=False)
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert [r.to_phase for r in rows] == phases
    # Retention is by TTL (the emulator never expires items: assert the attribute's value).
    for row in rows:
        assert int(state.audit_to_item(row)["expires_at"]["N"]) - int(row.at) == 90 * 86_400


def test_illegal_transition_is_refused_before_any_write() -> None:
    before = st.AgentStatus(key="default/a", phase="Terminating", audit_seq=3)
    with pytest.raises(st.IllegalTransition):
        state.transition_items(
            state_table="s",
            runlog_table="r",
            before=before,
            after=st.next_status(before, phase="Running"),
            audit=_audit("default/a", 4, "Running"),
        )
