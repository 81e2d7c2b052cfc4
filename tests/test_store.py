"""Desired-state store: generation rules, conditional writes, tombstones, fleets, history.

Rules are checked on the in-memory object store (same condition semantics as S3); concurrency,
versions and change records against the serialized emulator.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.objectstore import MemoryObjectStore, S3ObjectStore
from oab.controller.adapters.store import (
    ConflictError,
    Desired,
    DesiredStateStore,
    NameCollisionError,
    NotFoundError,
    OwnershipError,
    StoreConfig,
)
from oab.controller.base.names import CLEANUP_FINALIZER, FLEET_LABEL
from oab.controller.testing import AWS, FakeClock, SequentialIds

BUCKET = "oab-control-plane"


def svc(name: str = "bot", *, cpu: int = 256, ns: str = "default", **labels: str) -> Desired:
    return Desired(
        kind="OABService", namespace=ns, name=name, spec={"cpu": cpu, "memory": 512}, labels=labels
    )


def fleet(name: str, agents: list[str], *, ns: str = "default") -> tuple[Desired, list[Desired]]:
    parent = Desired(
        kind="OABFleet", namespace=ns, name=name, spec={"agents": [{"name": a} for a in agents]}
    )
    return parent, [svc(a, ns=ns) for a in agents]


@pytest.fixture
def store() -> DesiredStateStore:
    clock = FakeClock()
    return DesiredStateStore(
        MemoryObjectStore(clock=clock.time),
        wall_clock=clock.time,
        new_uid=SequentialIds("uid"),
        sleep=clock.sleep,
    )


def test_create_starts_at_generation_one_with_metadata(store: DesiredStateStore) -> None:
    result = store.apply(svc())
    assert (result.outcome, result.generation) == ("created", 1)
    obj = store.get("manifests/default/bot.yaml")
    assert obj is not None
    assert obj.metadata["uid"] == "uid-000001"
    assert obj.metadata["creationTimestamp"] == "2027-01-15T08:00:00Z"
    assert obj.spec == {"cpu": 256, "memory": 512}
    assert "status" not in obj.document


def test_identical_reapply_writes_nothing(store: DesiredStateStore) -> None:
    store.apply(svc())
    again = store.apply(svc())
    assert (again.outcome, again.generation, again.version_id) == ("unchanged", 1, None)
    assert len(store.history("manifests/default/bot.yaml")) == 1


def test_labels_write_a_version_but_keep_the_generation(store: DesiredStateStore) -> None:
    store.apply(svc())
    result = store.apply(svc(team="x"))
    assert (result.outcome, result.generation) == ("configured", 1)
    history = store.history("manifests/default/bot.yaml")
    assert [r.generation for r in history] == [1, 1]


def test_spec_change_bumps_generation_by_one(store: DesiredStateStore) -> None:
    store.apply(svc())
    assert store.apply(svc(cpu=512)).generation == 2
    assert store.apply(svc(cpu=512)).generation == 2
    assert store.apply(svc(cpu=256)).generation == 3
    uid = store.get("manifests/default/bot.yaml")
    assert uid is not None
    assert uid.metadata["uid"] == "uid-000001"


def test_delete_writes_a_tombstone_without_bumping(store: DesiredStateStore) -> None:
    store.apply(svc())
    result = store.delete("OABService", "default", "bot")
    assert (result.outcome, result.generation) == ("deleted", 1)
    obj = store.get("manifests/default/bot.yaml")
    assert obj is not None
    assert obj.deleted
    assert obj.metadata["finalizers"] == [CLEANUP_FINALIZER]
    assert obj.spec == {"cpu": 256, "memory": 512}
    assert store.delete("OABService", "default", "bot").outcome == "unchanged"
    with pytest.raises(NotFoundError):
        store.delete("OABService", "default", "ghost")


def test_reapplying_a_tombstone_revives_it_with_a_new_generation(store: DesiredStateStore) -> None:
    store.apply(svc())
    store.delete("OABService", "default", "bot")
    result = store.apply(svc())
    assert (result.outcome, result.generation) == ("configured", 2)
    obj = store.get("manifests/default/bot.yaml")
    assert obj is not None
    assert not obj.deleted
    assert "finalizers" not in obj.metadata


def test_finalize_removes_only_the_tombstone_it_read(store: DesiredStateStore) -> None:
    store.apply(svc())
    store.delete("OABService", "default", "bot")
    tomb = store.get("manifests/default/bot.yaml")
    assert tomb is not None
    store.apply(svc())  # revived while the controller was cleaning up
    with pytest.raises(ConflictError):
        store.finalize(tomb)
    assert store.get("manifests/default/bot.yaml") is not None
    store.delete("OABService", "default", "bot")
    tomb = store.get("manifests/default/bot.yaml")
    assert tomb is not None
    store.finalize(tomb)
    assert store.get("manifests/default/bot.yaml") is None


def test_dry_run_writes_nothing(store: DesiredStateStore) -> None:
    assert store.apply(svc(), dry_run=True).outcome == "created"
    assert store.get("manifests/default/bot.yaml") is None
    store.apply(svc())
    assert store.apply(svc(cpu=512), dry_run=True).generation == 2
    assert store.get_generation("manifests/default/bot.yaml", 1).spec["cpu"] == 256
    assert store.delete("OABService", "default", "bot", dry_run=True).outcome == "deleted"
    current = store.get("manifests/default/bot.yaml")
    assert current is not None
    assert not current.deleted


def test_history_and_get_generation(store: DesiredStateStore) -> None:
    for cpu in (256, 512, 1024):
        store.apply(svc(cpu=cpu))
    key = "manifests/default/bot.yaml"
    assert [r.generation for r in store.history(key)] == [3, 2, 1]
    assert store.get_generation(key, 2).spec["cpu"] == 512
    with pytest.raises(NotFoundError):
        store.get_generation(key, 9)


def test_list_by_namespace_and_all(store: DesiredStateStore) -> None:
    store.apply(svc("b", ns="one"))
    store.apply(svc("a", ns="one"))
    store.apply(svc("c", ns="two"))
    assert [o.name for o in store.list("one")] == ["a", "b"]
    assert [(o.namespace, o.name) for o in store.list()] == [
        ("one", "a"),
        ("one", "b"),
        ("two", "c"),
    ]


class _Flaky(MemoryObjectStore):
    """Loses every conditional write: a writer that always comes second."""

    def put(self, key: str, body: bytes, *, if_match: str | None, metadata: Any) -> Any:
        if self.read(key) is not None:
            super().put(
                key, body.replace(b"cpu: ", b"cpu: 1"), if_match=if_match, metadata=metadata
            )
        return super().put(key, body, if_match=if_match, metadata=metadata)


def test_gives_up_after_bounded_conflicts_and_names_the_winner() -> None:
    objects = _Flaky()
    sleeps: list[float] = []
    store = DesiredStateStore(objects, config=StoreConfig(max_attempts=3), sleep=sleeps.append)
    store.apply(svc())
    with pytest.raises(ConflictError) as err:
        store.apply(svc(cpu=512))
    assert err.value.attempts == 3
    assert err.value.current_generation == 4  # the rival's third write won last
    assert err.value.retryable
    assert len(sleeps) == 2  # between the three rounds; none after the last
    assert all(0 <= s <= 0.5 for s in sleeps)


def test_fleet_children_are_labelled_and_removed_agents_tombstoned(
    store: DesiredStateStore,
) -> None:
    parent, children = fleet("f", ["a", "b", "c"])
    results = store.apply_fleet(parent, children)
    assert [(r.kind, r.name, r.outcome) for r in results] == [
        ("OABFleet", "f", "created"),
        ("OABService", "a", "created"),
        ("OABService", "b", "created"),
        ("OABService", "c", "created"),
    ]
    assert store.get("fleets/default/f.yaml") is not None
    child = store.get("manifests/default/a.yaml")
    assert child is not None
    assert child.labels[FLEET_LABEL] == "f"
    parent, children = fleet("f", ["a", "c"])
    results = store.apply_fleet(parent, children)
    assert ("OABService", "b", "configured") in [(r.kind, r.name, r.outcome) for r in results]
    removed = store.get("manifests/default/b.yaml")
    assert removed is not None
    assert removed.deleted
    assert [o.name for o in store.list("default") if not o.deleted] == ["a", "c"]


def test_deleting_a_fleet_tombstones_children_then_fleet(store: DesiredStateStore) -> None:
    parent, children = fleet("f", ["a", "b"])
    store.apply_fleet(parent, children)
    results = store.delete_fleet("default", "f")
    assert [(r.kind, r.name) for r in results] == [
        ("OABFleet", "f"),
        ("OABService", "a"),
        ("OABService", "b"),
    ]
    assert all(o.deleted for o in store.list("default"))
    fleet_obj = store.get("fleets/default/f.yaml")
    assert fleet_obj is not None
    assert fleet_obj.deleted


def test_ownership_is_enforced_both_ways(store: DesiredStateStore) -> None:
    store.apply(svc("solo"))
    parent, children = fleet("f", ["solo", "x"])
    with pytest.raises(OwnershipError, match="not owned by a fleet"):
        store.apply_fleet(parent, children)
    assert store.get("manifests/default/x.yaml") is None  # preflight: nothing written
    parent, children = fleet("f", ["x"])
    store.apply_fleet(parent, children)
    with pytest.raises(OwnershipError, match="owned by fleet 'f'"):
        store.apply(svc("x"))
    with pytest.raises(OwnershipError):
        store.delete("OABService", "default", "x")


def test_an_agent_whose_ecs_name_is_taken_is_refused(store: DesiredStateStore) -> None:
    store.apply(svc("b-c", ns="a"))  # oab-a-b-c
    with pytest.raises(NameCollisionError, match="'oab-a-b-c' already belong to agent a/b-c"):
        store.apply(svc("c", ns="a-b"))
    with pytest.raises(NameCollisionError):
        store.apply(svc("c", ns="a-b"), dry_run=True)
    with pytest.raises(NameCollisionError):
        store.preflight([svc("c", ns="a-b")])
    parent, children = fleet("f", ["c"], ns="a-b")
    with pytest.raises(NameCollisionError):
        store.apply_fleet(parent, children)
    assert store.list("a-b") == []
    assert store.list("a-b", kind="OABFleet") == []
    # The stored agent itself is unaffected; unrelated names with hyphens are fine.
    assert store.apply(svc("b-c", ns="a", cpu=512)).generation == 2
    assert store.apply(svc("c-d", ns="a-b")).outcome == "created"

    # While the rival is a tombstone its ECS resources may still exist: still refused.
    store.delete("OABService", "a", "b-c")
    with pytest.raises(NameCollisionError, match="being deleted"):
        store.apply(svc("c", ns="a-b"))
    tombstone = store.get("manifests/a/b-c.yaml")
    assert tombstone is not None
    store.finalize(tombstone)
    assert store.apply(svc("c", ns="a-b")).outcome == "created"


# ----------------------------------------------------------------------------- emulator


def _s3_store(aws: AWS) -> DesiredStateStore:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return DesiredStateStore(
        S3ObjectStore(s3, BUCKET),
        changes=ChangeLog(aws.client("dynamodb"), aws.tables.state),
        config=StoreConfig(max_attempts=40),
    )


def test_s3_concurrent_applies_lose_no_update(aws: AWS) -> None:
    store = _s3_store(aws)
    writers = 8
    cpus = [256 * (i + 1) for i in range(writers)]
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers)

    def write(cpu: int) -> None:
        # Each thread has its own client: boto3 clients are thread-safe, stores share nothing.
        own = DesiredStateStore(
            S3ObjectStore(aws.client("s3"), BUCKET), config=StoreConfig(max_attempts=40)
        )
        barrier.wait()
        try:
            results.append(own.apply(svc(cpu=cpu)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in cpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    accepted = [r for r in results if r.outcome in ("created", "configured")]
    assert len(accepted) == writers  # every spec differs from whatever it followed
    key = "manifests/default/bot.yaml"
    final = store.get(key)
    assert final is not None
    assert final.generation == len(accepted)
    history = store.history(key)
    assert sorted(r.generation for r in history) == list(range(1, writers + 1))
    stored_cpus = sorted(store.get_generation(key, g).spec["cpu"] for g in range(1, writers + 1))
    assert stored_cpus == sorted(cpus)
    assert sorted(r.version_id for r in accepted) == sorted(r.version_id for r in history)


def test_s3_writes_record_changes(aws: AWS) -> None:
    store = _s3_store(aws)
    created = store.apply(svc())
    store.apply(svc())  # unchanged: no record
    updated = store.apply(svc(cpu=512))
    store.delete("OABService", "default", "bot")
    changes, _cursor = ChangeLog(aws.client("dynamodb"), aws.tables.state).read_since()
    assert [(c.generation, c.kind) for c in changes] == [(1, "apply"), (2, "apply"), (2, "delete")]
    assert changes[0].version_id == created.version_id
    assert changes[1].version_id == updated.version_id


def test_s3_tombstone_keeps_object_and_versions(aws: AWS) -> None:
    store = _s3_store(aws)
    store.apply(svc())
    store.delete("OABService", "default", "bot")
    history = store.history("manifests/default/bot.yaml")
    assert [(r.generation, r.deleted) for r in history] == [(1, True), (1, False)]
    head = aws.client("s3").head_object(Bucket=BUCKET, Key="manifests/default/bot.yaml")
    assert head["Metadata"] == {"generation": "1", "kind": "OABService", "deleted": "true"}
