"""Stored items: every free text within its byte budget; every decoder total.

Pure tests of :mod:`oab.controller.core.stored` and the status, audit and change-record codecs, plus
the audit-sequence resume on the emulator (a status item deleted behind its run log).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oab.controller.adapters import state
from oab.controller.adapters.changes import ChangeLog
from oab.controller.base.names import agent_key_of, is_agent_key
from oab.controller.core import status as sts
from oab.controller.core.stored import (
    AUDIT_CALLS_BYTES,
    CONDITION_MESSAGE_BYTES,
    ERROR_BYTES,
    UnreadableItem,
    clip,
    json_depth,
    safe_text,
)
from oab.controller.testing import AWS, FakeClock


def _item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size, near enough: attribute names plus values as UTF-8."""
    total = 0
    for name, value in item.items():
        total += len(name.encode())
        ((_tag, raw),) = value.items()
        total += len(str(raw).encode())
    return total


# ---------------------------------------------------------------------------------- budgets


def test_clip_is_bounded_valid_utf8_and_idempotent() -> None:
    for text, budget in [("x" * 10_000, 100), ("日本" * 5000, 101), ("\ud800" * 50, 20)]:
        cut = clip(text, budget)
        assert len(cut.encode()) <= budget
        assert clip(cut, budget) == cut
    assert clip("short", 100) == "short"


def test_safe_text_scrubs_credentials_before_clipping() -> None:
    token = "xoxb-" + "1" * 12 + "-" + "2" * 12 + "-" + "a" * 24
    text = safe_text(f"AccessDenied for {token} " + "y" * 10_000, 256)
    assert token not in text
    assert len(text.encode()) <= 256


def test_a_status_stores_bounded_errors_and_messages_and_compares_as_stored() -> None:
    conds = sts.set_condition(
        (), type="Degraded", status="True", reason="R" * 500, message="m" * 100_000, now="t"
    )
    status = sts.AgentStatus(
        key="team/bot", phase="Failed", conditions=conds, last_error="e" * 10**6
    )
    assert len(status.last_error.encode()) <= ERROR_BYTES
    assert len(status.conditions[0].message.encode()) <= CONDITION_MESSAGE_BYTES
    item = state.status_to_item(status)
    assert _item_size(item) < 12 * 1024
    # What is compared in memory is what is stored: a repeated long error is no change.
    assert state.status_from_item(item).material() == status.material()


def test_an_audit_row_stays_under_budget_whatever_its_calls_hold() -> None:
    calls = tuple(
        sts.AwsCall(action="s3:PutObject(snapshot)", target="t" * 5000, result="r" * 300_000)
        for _ in range(300)
    )
    row = sts.AuditRecord(
        key="team/bot", seq=1, run_id="r", generation=1, token="t", replica="r1", epoch=1,
        trace_id="0" * 32, span_id="0" * 16, from_phase=None, to_phase="Running", calls=calls,
        outcome="done", error="x" * 10**6, duration_ms=1, at=1_800_000_000.0,
    )  # fmt: skip
    item = state.audit_to_item(row)
    assert _item_size(item) < AUDIT_CALLS_BYTES + 8 * 1024
    stored = json.loads(item["calls"]["S"])
    assert stored[-1]["action"] == sts.OMITTED_CALLS_ACTION
    assert stored[-1]["result"].startswith(f"{300 - (len(stored) - 1)} more call(s)")
    back = state.audit_from_item(item)
    assert back.calls[0].result.endswith("bytes cut]")


# --------------------------------------------------------------------------------- decoding

_STATUS = state.status_to_item(
    sts.AgentStatus(
        key="team/bot",
        phase="Running",
        observed_generation=2,
        conditions=sts.set_condition(
            (), type="Available", status="True", reason="R", message="m", now="t"
        ),
        task_arns=("arn:task/1",),
        secret_versions={"T": "1"},
        audit_seq=5,
    )
)

_GARBAGE = st.one_of(
    st.none(),
    st.fixed_dictionaries({"S": st.sampled_from(["", "x", "[", "{}", "[1]", "[{}]", '{"a": 1}'])}),
    st.fixed_dictionaries({"S": st.just("[" * 5000 + "]" * 5000)}),
    st.fixed_dictionaries({"S": st.just('[{"type": "A", "status": "Maybe"}]')}),
    st.fixed_dictionaries({"N": st.sampled_from(["1", "-3", "1e999", "x", "9" * 60])}),
    st.fixed_dictionaries({"BOOL": st.booleans()}),
    st.fixed_dictionaries({"L": st.just([])}),
    st.integers(),
    st.text(max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(_STATUS)), _GARBAGE, min_size=1, max_size=4))
def test_status_decoding_is_total(changes: dict[str, Any]) -> None:
    item = {**_STATUS}
    for name, value in changes.items():
        if value is None:
            item.pop(name, None)
        else:
            item[name] = value
    problems: list[UnreadableItem] = []
    state.scan_statuses(_OneItem(item), "state", on_unreadable=lambda _k, e: problems.append(e))
    for exc in problems:  # at most one: the item decoded, or one named error
        assert exc.reason == "CorruptStatus"
        assert exc.table == "state"
        assert len(str(exc).encode()) < 1024


class _OneItem:
    """A scan answering ``item`` alone (the decoder's input, as DynamoDB would return it)."""

    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item

    def scan(self, **_kwargs: Any) -> dict[str, Any]:
        return {"Items": [self.item]}


def test_deep_json_in_a_status_is_refused_before_parsing() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert json_depth(deep) == 100_000
    with pytest.raises(UnreadableItem, match="conditions: JSON"):
        state.status_from_item({**_STATUS, "conditions": {"S": deep}})


def test_audit_row_decoding_is_total() -> None:
    row = sts.AuditRecord(
        key="team/bot", seq=1, run_id="r", generation=1, token="t", replica="r1", epoch=1,
        trace_id="0" * 32, span_id="0" * 16, from_phase=None, to_phase="Running", calls=(),
        outcome="done", error="", duration_ms=1, at=1_800_000_000.0,
    )  # fmt: skip
    item = state.audit_to_item(row)
    for name, bad in [
        ("at", {"S": "yesterday"}),
        ("calls", {"S": '[{"action": 1}]'}),
        ("to_phase", {"S": "Exploded"}),
        ("seq", {"S": "1"}),
        ("calls", {"S": "[" * 5000}),
    ]:
        with pytest.raises(UnreadableItem) as raised:
            state.audit_from_item({**item, name: bad})
        assert raised.value.reason == "CorruptAuditRow"
        assert raised.value.field == name


def test_agent_keys_must_be_dns_labels() -> None:
    assert is_agent_key("team/bot")
    for bad in ("team/bot\n", "a/b/c", "Team/bot", "team/", "x" * 64 + "/bot", "team/-bot"):
        assert not is_agent_key(bad), bad
    assert agent_key_of("manifests/a/b/c.yaml") is None
    assert agent_key_of("fleets/team/f.yaml") is None


def test_an_unreadable_change_record_is_skipped_and_reported_once(aws: AWS) -> None:
    ddb = aws.client("dynamodb")
    seen: list[UnreadableItem] = []
    clock = FakeClock()
    log = ChangeLog(ddb, aws.tables.state, wall_clock=clock.time, on_unreadable=seen.append)
    log.record("manifests/team/a.yaml", generation=1, kind="apply", version_id="v1")
    stamp = int(clock.time() * 1000)
    bad = [
        {"key": {"S": "manifests/a/b/c.yaml"}, "generation": {"N": "1"}},
        {"key": {"S": "manifests/team/x.yaml"}, "generation": {"S": "one"}},
        {"key": {"S": "manifests/team/y.yaml"}, "trace_context": {"S": "{" * 10_000}},
        {"key": {"S": "manifests/team/z.yaml"}, "kind": {"S": "explode"}},
    ]
    base = {"generation": {"N": "1"}, "kind": {"S": "apply"}, "version_id": {"S": "v"},
            "epoch_ms": {"N": str(stamp)}}  # fmt: skip
    for n, attrs in enumerate(bad):
        ddb.put_item(
            TableName=aws.tables.state,
            Item={"pk": {"S": "changes#0"}, "sk": {"S": f"{stamp:013d}#bad#{n}"}, **base, **attrs},
        )
    found, cursor = log.read_since()
    assert [c.key for c in found] == ["manifests/team/a.yaml"]
    assert [e.field for e in seen] == ["key", "generation", "trace_context", "kind"]
    assert all(e.reason == "CorruptChangeRecord" for e in seen)
    again, _ = log.read_since(cursor)
    assert again == []
    assert len(seen) == 4  # reported once, not at every poll inside the lookback


# ----------------------------------------------------------------- the audit sequence resume


def test_a_transition_after_the_run_log_continues_its_sequence() -> None:
    before = sts.AgentStatus(key="team/bot", audit_seq=0)
    after = sts.AgentStatus(key="team/bot", phase="Pending", audit_seq=8)
    audit = sts.AuditRecord(
        key="team/bot", seq=8, run_id="r", generation=1, token="t", replica="r1", epoch=1,
        trace_id="0" * 32, span_id="0" * 16, from_phase=None, to_phase="Pending", calls=(),
        outcome="done", error="", duration_ms=1, at=1_800_000_000.0,
    )  # fmt: skip
    items = state.transition_items(
        state_table="s", runlog_table="r", before=before, after=after, audit=audit, log_seq=7
    )
    # Conditional on the status as stored (absent), the row one past the log's newest.
    assert items[0]["Put"]["ConditionExpression"].startswith("attribute_not_exists(pk)")
    assert items[1]["Put"]["Item"]["seq"] == {"N": "8"}
    with pytest.raises(ValueError, match="past the newest row"):
        state.transition_items(
            state_table="s", runlog_table="r", before=before, after=after, audit=audit, log_seq=3
        )
