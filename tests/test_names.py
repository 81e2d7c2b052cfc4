"""Names and layouts other components read back are pinned here, spelled out literally.

``oab.controller.base.names`` is the one definition of every tag, label, S3 key and table key; a
change there is a migration (stored items, ECS tags and S3 objects written by earlier versions keep
the old spelling), so each value is restated here and a change must update this file on purpose.
"""

from __future__ import annotations

import hashlib
import zlib

import pytest

from oab.controller.base import names, taskcontract
from oab.queue.row import ready_shard_of


def test_api_and_ecs_names() -> None:
    assert names.API_VERSION == "oab.dev/v1"
    assert names.FLEET_LABEL == "oab.dev/fleet"
    assert names.RESTART_ANNOTATION == "oab.dev/restartedAt"
    assert names.CLEANUP_FINALIZER == "oab.dev/ecs-cleanup"
    assert names.resource_name("OABFleet") == "oabfleet.oab.dev"
    assert names.resource_name("OABService") == names.SERVICE_RESOURCE
    assert names.ecs_name("team-a", "bot") == "oab-team-a-bot"
    assert names.CONTENT_HASH_TAG == "oab.dev/content-hash"
    assert (names.NAMESPACE_TAG, names.NAME_TAG, names.GENERATION_TAG) == (
        "oab.dev/namespace",
        "oab.dev/name",
        "oab.dev/generation",
    )
    assert (names.MANAGED_BY_TAG, names.MANAGED_BY) == ("oab.dev/managed-by", "oab-controller")


def test_s3_layout() -> None:
    assert names.object_key("OABService", "ns", "a") == "manifests/ns/a.yaml"
    assert names.object_key("OABFleet", "ns", "f") == "fleets/ns/f.yaml"
    assert names.manifest_key("ns/a") == "manifests/ns/a.yaml"
    assert names.artifact_key("ns", "a", generation=3, digest="0123456789abcdef") == (
        "artifacts/ns/a/3/0123456789abcdef/config.toml"
    )
    assert names.snapshot_request_key("ns/a") == "snapshot-requests/ns/a"
    assert names.snapshot_record_key("ns/a", taken_at=1.5, snapshot_id="x") == (
        "snapshots/ns/a/19700101T000001.500Z-x.json"
    )
    assert names.CLUSTER_PROFILE_KEY == "config/cluster.json"
    assert names.CONTROL_PLANE_PREFIXES == (
        "manifests/",
        "fleets/",
        "artifacts/",
        "snapshots/",
        "snapshot-requests/",
        "config/",
    )
    with pytest.raises(ValueError, match="unknown kind"):
        names.object_key("Pod", "ns", "a")


@pytest.mark.parametrize(
    ("key", "agent"),
    [
        ("manifests/ns/a.yaml", "ns/a"),
        ("fleets/ns/f.yaml", None),
        ("manifests/NS/a.yaml", None),
        ("manifests/ns/a.yaml\n", None),
        ("manifests/ns/a/b.yaml", None),
    ],
)
def test_agent_keys_are_read_back_from_object_keys(key: str, agent: str | None) -> None:
    assert names.agent_key_of(key) == agent


def test_table_names_and_keys() -> None:
    assert names.TableNames.with_prefix("x").all() == ("x-lease", "x-queue", "x-state", "x-runlog")
    assert names.TableNames() == names.TableNames.with_prefix("oab")
    assert names.status_partition_key("ns/a") == "agent#ns/a"
    assert names.agent_of_status_partition("agent#ns/a") == "ns/a"
    assert names.STATUS_SORT_KEY == "status"
    assert names.change_partition_key(2) == "changes#2"
    assert names.change_sort_key(epoch_ms=42, object_key="manifests/ns/a.yaml", generation=7) == (
        "0000000000042#manifests/ns/a.yaml#7"
    )
    assert (names.TTL_ATTRIBUTE, names.RUN_INDEX) == ("expires_at", "run-index")


def test_each_table_keeps_its_own_shard_function() -> None:
    # Rows already stored live where these functions put them: the change log's crc32 and the
    # work queue's sha256 are different functions on purpose, and neither may change.
    for key in ("manifests/ns/a.yaml", "manifests/team/bot.yaml", "ns/a"):
        assert names.change_shard_of(key) == zlib.crc32(key.encode()) % 4
        digest = hashlib.sha256(key.encode()).digest()[:8]
        assert ready_shard_of(key, 8) == int.from_bytes(digest, "big") % 8
    assert names.change_shard_of("manifests/ns/a.yaml", shards=1) == 0


def test_the_task_contract_reserves_what_the_controller_sets() -> None:
    assert {"CONFIG_ARTIFACT_PATH", "BOOTSTRAP_FROM"} == taskcontract.RESERVED_ENV
    assert (taskcontract.ENV_CONFIG_ARTIFACT, taskcontract.ENV_BOOTSTRAP_FROM) == (
        "CONFIG_ARTIFACT_PATH",
        "BOOTSTRAP_FROM",
    )


def test_the_entry_script_spells_the_shared_volume_names() -> None:
    # The sidecar reads these names from the contract; the entry script spells them in sh.
    script = taskcontract.ENTRY_SCRIPT
    assert f'inbox="$oab/{taskcontract.INBOX}"' in script
    assert f'outbox="$oab/{taskcontract.OUTBOX}"' in script
    assert f'"$inbox/{taskcontract.INBOX_REQUEST}"' in script
    assert f"snapshot {taskcontract.FINAL_ARCHIVE}\n" in script
    assert f'"$outbox/{taskcontract.EXITED_MARKER}"' in script
    assert f"${{{taskcontract.ENV_SHARED_DIR}:-{taskcontract.SHARED_DIR}}}" in script
