"""The state store's contract, run against DynamoDB (the emulator) and the in-memory twin alike:
status reads, transition + audit row commits (all or nothing, refusals by item), run-log queries,
the run-id index, unreadable items, change records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from oab.controller.adapters import state
from oab.controller.adapters.aws import make_table_models
from oab.controller.adapters.changes import ChangeLog, MemoryChangeRows
from oab.controller.adapters.statestore import (
    DynamoStateStore,
    MemoryStateStore,
    StateStore,
    TransitionRefused,
)
from oab.controller.base.names import TableNames
from oab.controller.core import status as st
from oab.controller.core.stored import UnreadableItem
from oab.controller.testing import AWS, FakeClock

KEY = "team/bot"


class Plant:
    """Writes raw items into the store's tables, as a hostile or buggy writer would."""

    def __init__(self, store: StateStore, aws: AWS | None, names: TableNames) -> None:
        self.store, self.aws, self.names = store, aws, names

    def __call__(self, table: str, item: dict[str, object]) -> None:
        if self.aws is not None:
            self.aws.client("dynamodb").put_item(TableName=table, Item=item)
        else:
            assert isinstance(self.store, MemoryStateStore)
            self.store.put_raw(table, item)


@pytest.fixture(params=["dynamodb", "memory"])
def kit(request: pytest.FixtureRequest) -> Iterator[tuple[StateStore, Plant, FakeClock]]:
    clock = FakeClock()
    if request.param == "dynamodb":
        aws: AWS = request.getfixturevalue("aws")
        bound = make_table_models(aws.session, aws.tables, endpoint_url=aws.emulator.endpoint)
        changes = ChangeLog(bound.client, aws.tables.state, wall_clock=clock.time)
        store: StateStore = DynamoStateStore(bound, changes=changes)
        yield store, Plant(store, aws, aws.tables), clock
    else:
        names = TableNames()
        changes = ChangeLog(None, names.state, wall_clock=clock.time, rows=MemoryChangeRows())
        store = MemoryStateStore(names=names, changes=changes)
        yield store, Plant(store, None, names), clock


def _audit(seq: int, to: st.Phase, *, run_id: str = "") -> st.AuditRecord:
    return st.AuditRecord(
        key=KEY, seq=seq, run_id=run_id or f"run-{seq}", generation=1, token="t", replica="r1",
        epoch=1, trace_id="0" * 32, span_id="0" * 16, from_phase=None, to_phase=to, calls=(),
        outcome="done", error="", duration_ms=1, at=1_800_000_000.0 + seq,
    )  # fmt: skip


def _advance(store: StateStore, before: st.AgentStatus, phase: st.Phase) -> st.AgentStatus:
    after = st.next_status(before, phase=phase)
    store.commit(
        store.transition_items(before=before, after=after, audit=_audit(after.audit_seq, phase))
    )
    return after


def test_transitions_commit_with_their_audit_rows_and_read_back(
    kit: tuple[StateStore, Plant, FakeClock],
) -> None:
    store, _, _ = kit
    assert store.read_status(KEY) == st.AgentStatus(key=KEY)
    assert store.newest_audit_seq(KEY) == 0
    status = st.AgentStatus(key=KEY)
    for phase in ("Pending", "Running", "Failed"):
        status = _advance(store, status, phase)  # type: ignore[arg-type]
    assert store.read_status(KEY) == status
    assert store.statuses() == {KEY: status}
    assert store.newest_audit_seq(KEY) == 3
    assert [r.seq for r in store.read_runlog(KEY)] == [3, 2, 1]
    assert [r.to_phase for r in store.read_runlog(KEY, newest_first=False)] == [
        "Pending",
        "Running",
        "Failed",
    ]
    assert [r.seq for r in store.read_runlog(KEY, limit=2)] == [3, 2]
    found = store.run("run-2")
    assert found is not None
    assert (found.seq, found.to_phase) == (2, "Running")


def test_a_stale_transition_is_refused_at_the_status_item_and_writes_nothing(
    kit: tuple[StateStore, Plant, FakeClock],
) -> None:
    store, _, _ = kit
    first = _advance(store, st.AgentStatus(key=KEY), "Pending")
    second = _advance(store, first, "Running")
    # A writer that read ``first`` (sequence 1) but whose audit row would be new (seq 3 here is
    # absent): only the status item's condition fails, so the refusal names item 0.
    stale = st.next_status(first, phase="Failed")
    items = store.transition_items(
        before=first, after=stale, audit=_audit(2, "Failed"), log_seq=None
    )
    items[1]["Put"]["Item"] = state.audit_to_item(_audit(3, "Failed"))
    with pytest.raises(TransitionRefused) as exc:
        store.commit(items)
    assert exc.value.index == 0
    assert store.read_status(KEY) == second
    assert store.newest_audit_seq(KEY) == 2  # all or nothing: the audit row was not written


def test_an_audit_row_collision_is_refused_at_the_audit_item(
    kit: tuple[StateStore, Plant, FakeClock],
) -> None:
    store, plant, _ = kit
    first = _advance(store, st.AgentStatus(key=KEY), "Pending")
    # A row 2 already exists (a status restored from an older backup): the audit put refuses.
    plant(TableNames().runlog, state.audit_to_item(_audit(2, "Running", run_id="other")))
    with pytest.raises(TransitionRefused) as exc:
        _advance(store, first, "Running")
    assert exc.value.index == 1
    assert store.read_status(KEY) == first
    # Following the log's newest row (log_seq) the transition goes through, without a gap.
    after = replace(st.next_status(first, phase="Running"), audit_seq=3)
    store.commit(
        store.transition_items(before=first, after=after, audit=_audit(3, "Running"), log_seq=2)
    )
    assert [r.seq for r in store.read_runlog(KEY)] == [3, 2, 1]


def test_unreadable_items_are_reported_and_left_out(
    kit: tuple[StateStore, Plant, FakeClock],
) -> None:
    store, plant, _ = kit
    good = _advance(store, st.AgentStatus(key=KEY), "Pending")
    bad = state.status_to_item(st.AgentStatus(key="team/broken", phase="Running"))
    plant(TableNames().state, {**bad, "audit_seq": {"S": "seven"}})
    plant(TableNames().runlog, {**state.audit_to_item(_audit(2, "Running")), "at": {"S": "noon"}})
    problems: list[tuple[str, str]] = []
    assert store.statuses(on_unreadable=lambda k, e: problems.append((k, e.field))) == {KEY: good}
    assert problems == [("team/broken", "audit_seq")]
    with pytest.raises(UnreadableItem) as exc:
        store.read_status("team/broken")
    assert exc.value.reason == "CorruptStatus"
    skipped: list[UnreadableItem] = []
    assert [r.seq for r in store.read_runlog(KEY, on_unreadable=skipped.append)] == [1]
    assert [e.field for e in skipped] == ["at"]
    with pytest.raises(UnreadableItem):
        store.read_runlog(KEY)


def test_change_records_round_trip_through_the_store(
    kit: tuple[StateStore, Plant, FakeClock],
) -> None:
    store, _, clock = kit
    recorded = store.changes.record(
        "manifests/team/bot.yaml", generation=2, kind="apply", version_id="v2", trace_context={}
    )
    clock.advance(0.01)
    store.changes.record(
        "fleets/team/f.yaml", generation=1, kind="delete", version_id="v1", trace_context={}
    )
    changes, cursor = store.changes.read_since()
    assert changes[0] == recorded
    assert [(c.key, c.kind) for c in changes] == [
        ("manifests/team/bot.yaml", "apply"),
        ("fleets/team/f.yaml", "delete"),
    ]
    assert store.changes.read_since(cursor)[0] == []
