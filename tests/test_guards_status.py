"""Guards of the status commit, pinned so that weakening one fails a test (issue 15).

- The status write is conditional on the stored audit sequence (``audit_seq = :prev``). The old
  test's stale writer also collided on its audit row (rows are gap-free, so row ``prev + 1``
  already existed) and the row's condition rejected it first: the status condition could be
  weakened unnoticed. Here the stale writer's row does *not* collide, as after the audit rows
  expired by TTL (90 days; the emulator never expires, so the rows are deleted directly), so the
  status condition alone must refuse it.
- The phase machine is checked against the table the README documents, written out here, not
  against the code's own table (walking ``ALLOWED_TRANSITIONS`` cannot find a missing entry).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from botocore.exceptions import ClientError

from oab.controller.adapters import state
from oab.controller.core import status as st
from oab.controller.testing import AWS

KEY = "default/a"

#: README "Phase machine": from -> allowed targets (``None``: no status / cleared).
DOCUMENTED: dict[st.Phase | None, set[st.Phase]] = {
    None: {"Pending", "Running", "Suspended", "Failed", "Terminating"},
    "Pending": {"Pending", "Running", "Suspended", "Failed", "Terminating"},
    "Running": {"Pending", "Running", "Suspended", "Failed", "Terminating"},
    "Suspended": {"Pending", "Running", "Suspended", "Failed", "Terminating"},
    "Failed": {"Pending", "Running", "Suspended", "Failed", "Terminating"},
    "Terminating": {"Terminating"},
}


def test_phase_machine_is_the_documented_table() -> None:
    for current, target in itertools.product([None, *st.PHASES], st.PHASES):
        if target in DOCUMENTED[current]:
            st.check_transition(current, target)
        else:
            with pytest.raises(st.IllegalTransition):
                st.check_transition(current, target)


def test_only_a_finished_deletion_clears_the_status() -> None:
    """Terminating -> cleared ends a deletion; an already empty status may stay empty (deleting
    an agent that never ran); a live phase is never cleared."""
    for phase in (None, *st.PHASES):
        before = st.AgentStatus(key=KEY, phase=phase, audit_seq=3)
        after = st.next_status(st.cleared(before))
        audit = _audit(4, before=phase, to=None)
        if phase in (None, "Terminating"):
            state.transition_items(
                state_table="s", runlog_table="r", before=before, after=after, audit=audit
            )
        else:
            with pytest.raises(st.IllegalTransition):
                state.transition_items(
                    state_table="s", runlog_table="r", before=before, after=after, audit=audit
                )


def _audit(seq: int, *, before: st.Phase | None, to: st.Phase | None) -> st.AuditRecord:
    return st.AuditRecord(
        key=KEY,
        seq=seq,
        run_id=f"run-{seq}",
        generation=1,
        token="tok",
        replica="r1",
        epoch=1,
        trace_id="t" * 32,
        span_id="s" * 16,
        from_phase=before,
        to_phase=to,
        calls=(),
        outcome="done",
        error="",
        duration_ms=5,
        at=1_800_000_000.0,
    )


def _commit(aws: AWS, before: st.AgentStatus, to: st.Phase) -> st.AgentStatus:
    after = st.next_status(before, phase=to)
    items = state.transition_items(
        state_table=aws.tables.state,
        runlog_table=aws.tables.runlog,
        before=before,
        after=after,
        audit=_audit(after.audit_seq, before=before.phase, to=to),
    )
    aws.client("dynamodb").transact_write_items(TransactItems=items)
    return after


def _four_transitions(aws: AWS) -> st.AgentStatus:
    status = st.AgentStatus(key=KEY)
    for phase in ("Pending", "Running", "Pending", "Running"):
        status = _commit(aws, status, phase)  # type: ignore[arg-type]
    return status


def _expire_rows(aws: AWS) -> None:
    """Delete every audit row of the agent, as TTL expiry does after 90 days."""
    ddb = aws.client("dynamodb")
    for row in state.read_runlog(ddb, aws.tables.runlog, KEY):
        ddb.delete_item(
            TableName=aws.tables.runlog, Key={"pk": {"S": KEY}, "seq": {"N": str(row.seq)}}
        )


@pytest.mark.parametrize("stale_seq", [0, 2], ids=["read-before-creation", "read-mid-way"])
def test_a_stale_status_write_is_refused_when_its_audit_row_does_not_collide(
    aws: AWS, stale_seq: int
) -> None:
    ddb = aws.client("dynamodb")
    current = _four_transitions(aws)
    _expire_rows(aws)
    # A writer that read the status at ``stale_seq``; its audit row (stale_seq + 1) is absent.
    stale = st.AgentStatus(key=KEY, phase="Running" if stale_seq else None, audit_seq=stale_seq)
    with pytest.raises(ClientError) as exc:
        _commit(aws, stale, "Failed")
    assert exc.value.response["Error"]["Code"] == "TransactionCanceledException"
    stored = state.read_status(ddb, aws.tables.state, KEY)
    assert (stored.phase, stored.audit_seq) == (current.phase, 4)
    assert state.read_runlog(ddb, aws.tables.runlog, KEY) == []  # its audit row was not written
    # The writer that read the current status still commits.
    assert _commit(aws, current, "Failed").audit_seq == 5


def test_a_writer_ahead_of_the_stored_sequence_is_refused(aws: AWS) -> None:
    """A status item older than the writer's read (restored from a backup) refuses the write:
    the condition is equality, not an ordering."""
    ddb = aws.client("dynamodb")
    current = _four_transitions(aws)
    restored = st.AgentStatus(key=KEY, phase="Running", audit_seq=2)
    ddb.put_item(TableName=aws.tables.state, Item=state.status_to_item(restored))
    with pytest.raises(ClientError):
        _commit(aws, current, "Failed")
    assert state.read_status(ddb, aws.tables.state, KEY).audit_seq == 2
    assert [r.seq for r in state.read_runlog(ddb, aws.tables.runlog, KEY)] == [4, 3, 2, 1]


def test_the_audit_row_must_carry_the_new_sequence() -> None:
    before = st.AgentStatus(key=KEY, phase="Pending", audit_seq=3)
    after = st.next_status(before, phase="Running")
    for seq in (3, 5):  # behind and ahead of the status's new sequence (4)
        with pytest.raises(ValueError, match="advance by exactly one"):
            state.transition_items(
                state_table="s",
                runlog_table="r",
                before=before,
                after=after,
                audit=_audit(seq, before="Pending", to="Running"),
            )


@pytest.mark.parametrize("ahead", [0, 2], ids=["not-advanced", "skipped-one"])
def test_the_status_must_advance_by_exactly_one(ahead: int) -> None:
    before = st.AgentStatus(key=KEY, phase="Pending", audit_seq=3)
    after = replace(before, phase="Running", audit_seq=3 + ahead)
    with pytest.raises(ValueError, match="advance by exactly one"):
        state.transition_items(
            state_table="s",
            runlog_table="r",
            before=before,
            after=after,
            audit=_audit(3 + ahead, before="Pending", to="Running"),
        )


def test_long_audit_logs_compare_sequences_by_value() -> None:
    # Past 256 rows Python's ints are no longer shared objects: identity is not equality.
    before = st.AgentStatus(key=KEY, phase="Running", audit_seq=int("300"))
    after = st.next_status(before, phase="Running")
    items = state.transition_items(
        state_table="s",
        runlog_table="r",
        before=before,
        after=after,
        audit=_audit(int("30") * 10 + 1, before="Running", to="Running"),
    )
    assert items[0]["Put"]["ExpressionAttributeValues"] == {":prev": {"N": "300"}}
