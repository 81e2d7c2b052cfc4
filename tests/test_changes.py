"""Change records: sharded feed in the state table, cursor with a lookback window."""

from __future__ import annotations

from oab.controller.adapters.changes import RETENTION_SECONDS, ChangeLog, Cursor
from oab.controller.base.names import CHANGE_SHARDS, agent_key_of, change_shard_of
from oab.controller.testing import AWS, FakeClock


def test_records_are_sharded_stamped_and_expire(aws: AWS) -> None:
    clock = FakeClock()
    log = ChangeLog(aws.client("dynamodb"), aws.tables.state, wall_clock=clock.time)
    change = log.record(
        "manifests/ns/a.yaml",
        generation=3,
        kind="apply",
        version_id="v1",
        trace_context={"traceparent": "00-abc-def-01"},
    )
    item = aws.client("dynamodb").get_item(
        TableName=aws.tables.state,
        Key={
            "pk": {"S": f"changes#{change_shard_of('manifests/ns/a.yaml')}"},
            "sk": {"S": f"{int(clock.time() * 1000):013d}#manifests/ns/a.yaml#3"},
        },
    )["Item"]
    assert int(item["expires_at"]["N"]) == int(clock.time()) + RETENTION_SECONDS
    assert change.sort_key == item["sk"]["S"]
    changes, _ = log.read_since()
    assert changes == [change]
    assert changes[0].trace_context == {"traceparent": "00-abc-def-01"}


def test_read_since_returns_each_change_once_across_shards(aws: AWS) -> None:
    clock = FakeClock()
    log = ChangeLog(aws.client("dynamodb"), aws.tables.state, wall_clock=clock.time)
    keys = [f"manifests/ns/agent-{i}.yaml" for i in range(12)]
    assert (
        len({change_shard_of(k) for k in keys}) == CHANGE_SHARDS
    )  # the test really spans every shard
    for key in keys[:6]:
        clock.advance(0.01)
        log.record(key, generation=1, kind="apply", version_id="v")
    first, cursor = log.read_since()
    assert [c.key for c in first] == keys[:6]
    again, cursor = log.read_since(cursor)
    assert again == []  # the lookback window re-reads them but the cursor drops them
    for key in keys[6:]:
        clock.advance(0.01)
        log.record(key, generation=1, kind="delete", version_id="v")
    second, cursor = log.read_since(cursor)
    assert [c.key for c in second] == keys[6:]


def test_late_record_inside_the_lookback_is_not_missed(aws: AWS) -> None:
    clock = FakeClock()
    log = ChangeLog(aws.client("dynamodb"), aws.tables.state, shards=1, wall_clock=clock.time)
    log.record("manifests/ns/a.yaml", generation=1, kind="apply", version_id="v")
    _, cursor = log.read_since()
    # A writer whose clock is 2 s behind records after the reader moved on.
    skewed = ChangeLog(
        aws.client("dynamodb"), aws.tables.state, shards=1, wall_clock=lambda: clock.time() - 2
    )
    skewed.record("manifests/ns/b.yaml", generation=1, kind="apply", version_id="v")
    late, _ = log.read_since(cursor)
    assert [c.key for c in late] == ["manifests/ns/b.yaml"]


def test_cursor_starting_at_skips_older_changes(aws: AWS) -> None:
    clock = FakeClock()
    log = ChangeLog(aws.client("dynamodb"), aws.tables.state, wall_clock=clock.time, lookback_ms=0)
    log.record("manifests/ns/old.yaml", generation=1, kind="apply", version_id="v")
    clock.advance(10)
    log.record("manifests/ns/new.yaml", generation=1, kind="apply", version_id="v")
    changes, _ = log.read_since(Cursor.starting_at(int(clock.time() * 1000)))
    assert [c.key for c in changes] == ["manifests/ns/new.yaml"]


def test_agent_key_of() -> None:
    assert agent_key_of("manifests/ns/a.yaml") == "ns/a"
    assert agent_key_of("fleets/ns/f.yaml") is None
