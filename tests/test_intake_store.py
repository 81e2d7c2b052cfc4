"""Stored manifests are read as untrusted: size from ContentLength, the manifest caps, the
envelope; an unreadable object parks its agent, is skipped by lists and replaced by apply.

Rules on the in-memory object store; sizes, memory and the reconciler's read against the
emulator (objects planted straight into the bucket, as someone with bucket access would).
"""

from __future__ import annotations

import contextlib
import textwrap
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from oab.controller.adapters.objectstore import MemoryObjectStore, S3ObjectStore
from oab.controller.adapters.store import (
    Desired,
    DesiredStateStore,
    DocumentTooLarge,
    InvalidStoredObject,
    StoreConfig,
)
from oab.controller.api.intake import ManifestLimits
from oab.controller.api.service import AgentKey
from oab.controller.base.errors import TerminalError
from oab.controller.core.outcome import decide
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.testing import AWS, FakeClock, SequentialIds

BUCKET = "oab-stored-intake"
KEY = "manifests/team/bot.yaml"

GOOD = textwrap.dedent(
    """\
    apiVersion: oab.dev/v1
    kind: OABService
    metadata:
      name: bot
      namespace: team
      uid: u-1
      generation: 3
      creationTimestamp: '2030-01-01T00:00:00Z'
    spec:
      cpu: 256
      memory: 512
      taskDefinition: {image: img}
      secrets: [{name: DISCORD_BOT_TOKEN, source: ssm, path: /oab/team/bot/discord-token}]
      config:
        agent: {preset: kiro}
        discord: {bot_token: "${DISCORD_BOT_TOKEN}", allowed_channels: ["123456789012345678"]}
    """
)
BOMB = GOOD + textwrap.dedent(
    """\
      platform:
        k8s:
          a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
          b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
          c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
          d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
          e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
          f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
          g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
          h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
    """
)


def svc(name: str = "bot", *, ns: str = "team", **labels: str) -> Desired:
    return Desired(
        kind="OABService", namespace=ns, name=name, spec={"cpu": 256, "memory": 512}, labels=labels
    )


@pytest.fixture
def objects() -> MemoryObjectStore:
    return MemoryObjectStore(clock=FakeClock().time)


@pytest.fixture
def store(objects: MemoryObjectStore) -> DesiredStateStore:
    clock = FakeClock()
    return DesiredStateStore(
        objects, wall_clock=clock.time, new_uid=SequentialIds("uid"), sleep=clock.sleep
    )


def plant(objects: MemoryObjectStore, key: str, body: str | bytes, **meta: str) -> None:
    """Write ``body`` under ``key`` behind the store's back (as anyone with bucket access)."""
    data = body.encode() if isinstance(body, str) else body
    current = objects.read(key)
    objects.put(key, data, if_match=current.etag if current else None, metadata=meta)


def peak_bytes(run: Callable[[], Any]) -> int:
    """Peak Python allocation while ``run()`` executes (exceptions swallowed)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with contextlib.suppress(Exception):  # the caller checks the exception itself
            run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -------------------------------------------------------------------------- unreadable objects


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (BOMB, "more than 100,000 YAML nodes"),
        ("a: [unclosed\n", "not valid YAML"),
        ("- a list\n", "a stored object must be a mapping"),
        (GOOD.replace("generation: 3", "generation: lots"), "metadata.generation"),
        (GOOD.replace("generation: 3", "generation: -1"), "metadata.generation"),
        (GOOD.replace("  uid: u-1\n", "  labels: [a, b]\n"), "metadata.labels"),
        (GOOD.replace("kind: OABService", "kind: Pod"), "kind"),
        (GOOD.replace("spec:\n", "spec: [x]\nnot_spec:\n"), "spec"),
        (GOOD.replace("name: bot", "name: other"), "it holds OABService team/other"),
        (GOOD.replace("kind: OABService", "kind: OABFleet"), "it holds OABFleet team/bot"),
        (GOOD.replace("uid: u-1", 'uid: "\\x1b[2J"'), "control character U+001B"),
    ],
)
def test_a_malformed_stored_object_is_invalid_with_its_reason(
    objects: MemoryObjectStore, store: DesiredStateStore, body: str, detail: str
) -> None:
    plant(objects, KEY, body, generation="3")
    with pytest.raises(InvalidStoredObject) as info:
        store.get(KEY)
    error = info.value
    assert detail in error.detail
    assert (error.key, error.generation, error.retryable) == (KEY, 3, False)
    assert str(error).endswith("apply a corrected manifest with `oabctl apply` to replace it")


def test_an_object_over_the_configured_cap_is_refused(objects: MemoryObjectStore) -> None:
    store = DesiredStateStore(objects, config=StoreConfig(limits=ManifestLimits(stored_bytes=300)))
    plant(objects, KEY, GOOD)
    with pytest.raises(InvalidStoredObject) as info:
        store.get(KEY)
    assert info.value.detail == (
        f"the stored object is {len(GOOD):,} bytes, over the 300 bytes limit"
    )


def test_the_reconciler_parks_an_unreadable_manifest(
    objects: MemoryObjectStore, store: DesiredStateStore
) -> None:
    plant(objects, KEY, BOMB)
    with pytest.raises(TerminalError) as info:
        StoreManifests(store).read(AgentKey("team/bot"))
    assert info.value.reason == "InvalidManifest"
    assert "more than 100,000 YAML nodes" in str(info.value)
    assert "apply a corrected manifest" in str(info.value)
    decision = decide(error=info.value)
    assert (decision.kind, decision.reason) == ("park", "InvalidManifest")


def test_apply_replaces_an_unreadable_object_and_continues_its_generation(
    objects: MemoryObjectStore, store: DesiredStateStore
) -> None:
    plant(objects, KEY, BOMB, generation="7")
    result = store.apply(svc())
    assert (result.outcome, result.generation) == ("configured", 8)
    stored = store.get(KEY)
    assert stored is not None
    assert (stored.generation, stored.spec) == (8, {"cpu": 256, "memory": 512})


def test_a_replacement_never_goes_back_in_generations(
    objects: MemoryObjectStore, store: DesiredStateStore
) -> None:
    store.apply(svc())
    store.apply(Desired(kind="OABService", namespace="team", name="bot", spec={"cpu": 512}))
    plant(objects, KEY, BOMB)  # planted with no metadata: it claims nothing
    result = store.apply(svc())
    assert (result.outcome, result.generation) == ("configured", 3)


def test_a_fleet_apply_replaces_its_unreadable_child(
    objects: MemoryObjectStore, store: DesiredStateStore
) -> None:
    fleet = Desired(kind="OABFleet", namespace="team", name="f", spec={"agents": [{"name": "bot"}]})
    plant(objects, KEY, "not: [yaml")  # nobody can tell which fleet owned it
    results = store.apply_fleet(fleet, [svc()])
    assert [(r.kind, r.outcome) for r in results] == [
        ("OABFleet", "created"),
        ("OABService", "configured"),
    ]
    child = store.get(KEY)
    assert child is not None
    assert child.owner == "f"


def test_list_skips_an_unreadable_object_and_reports_it(
    objects: MemoryObjectStore, store: DesiredStateStore
) -> None:
    store.apply(svc("a"))
    plant(objects, "manifests/team/b.yaml", BOMB)
    store.apply(svc("c"))
    skipped: list[InvalidStoredObject] = []
    assert [o.name for o in store.list("team", unreadable=skipped)] == ["a", "c"]
    assert [e.key for e in skipped] == ["manifests/team/b.yaml"]
    assert [o.name for o in store.list()] == ["a", "c"]  # without the list: logged, skipped


def test_delete_refuses_an_unreadable_object(
    objects: MemoryObjectStore, store: DesiredStateStore
) -> None:
    plant(objects, KEY, BOMB)
    with pytest.raises(InvalidStoredObject):
        store.delete("OABService", "team", "bot")


def test_history_survives_hostile_user_metadata(
    objects: MemoryObjectStore, store: DesiredStateStore
) -> None:
    store.apply(svc())
    plant(objects, KEY, GOOD, generation="9" * 5_000)
    plant(objects, KEY, GOOD, generation="x")
    assert [r.generation for r in store.history(KEY)] == [0, 0, 1]


def test_a_document_over_the_cap_is_never_written(objects: MemoryObjectStore) -> None:
    store = DesiredStateStore(
        objects, config=StoreConfig(limits=ManifestLimits(stored_bytes=2_000))
    )
    big = Desired(kind="OABService", namespace="team", name="bot", spec={"env": {"A": "x" * 3_000}})
    with pytest.raises(DocumentTooLarge) as info:
        store.apply(big)
    assert "over the 2,000 bytes limit per stored object" in str(info.value)
    assert objects.read(KEY) is None


# ------------------------------------------------------------------------- against the emulator


@pytest.fixture
def s3(aws: AWS) -> Any:
    client = aws.client("s3")
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


def test_a_huge_object_is_never_downloaded(s3: Any) -> None:
    body = GOOD.encode() + b"#" * (8 << 20)  # 8 MiB of comment: valid YAML, over the cap
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=body, Metadata={"generation": "3"})
    store = DesiredStateStore(S3ObjectStore(s3, BUCKET))
    errors: list[InvalidStoredObject] = []

    def read() -> None:
        try:
            store.get(KEY)
        except InvalidStoredObject as exc:
            errors.append(exc)

    peak = peak_bytes(read)
    (error,) = errors
    assert error.detail == f"it is {len(body):,} bytes, over the 1 MiB limit"
    assert error.generation == 3
    assert peak < 1 << 20  # the body was not read


def test_the_reconciler_read_of_a_planted_bomb_is_cheap_and_terminal(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=BOMB.encode())
    manifests = StoreManifests(DesiredStateStore(S3ObjectStore(s3, BUCKET)))
    errors: list[BaseException] = []

    def read() -> None:
        try:
            manifests.read(AgentKey("team/bot"))
        except TerminalError as exc:
            errors.append(exc)

    # Fully expanded the bomb is 10^8 strings; the read stops after ~100,000 nodes.
    assert peak_bytes(read) < 16 << 20
    (error,) = errors
    assert isinstance(error, TerminalError)
    assert error.reason == "InvalidManifest"
