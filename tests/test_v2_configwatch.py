"""An ``oab.dev/v2`` ``configFrom: s3://`` object is watched like an auto-restart secret.

Against local AWS with the simulated ECS data plane, one in-process replica (scheduler + workers);
nothing of the project's code is mocked. The resync is called directly (no waiting for its
period); outcomes are awaited with deadlines.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from oab.controller.adapters.clusterprofile import read_cluster_profile
from oab.controller.adapters.configsource import CONFIG_VERSION_KEY, ConfigObjects
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.state import read_status
from oab.controller.base import taskcontract
from oab.controller.base.errors import AwsError, TerminalError
from oab.controller.core.status import AgentStatus
from oab.controller.testing import (
    AWS,
    available_at,
    oabctl,
    prepare_plane,
    replica_settings,
    running_replica,
    wait_until,
)

PLANE = "oab-test-plane"
TENANT = "team-agent-config"
URL = f"s3://{TENANT}/team/bot/config.toml"
MANIFEST = f"""\
apiVersion: oab.dev/v2
kind: OABService
metadata:
  name: bot
  namespace: team
spec:
  image: ghcr.io/openabdev/openab:stable-kiro
  resources: {{ cpu: "256", memory: "512" }}
  configFrom: {URL}
  runtime:
    type: ecs
    capacityProvider: FARGATE
    networking:
      subnets: [SUBNET]
      securityGroups: [GROUP]
"""
CONFIG_1 = (
    '[agent]\ncommand = "kiro-cli"\nargs = ["acp", "--trust-all-tools"]\n\n'
    '[gateway]\nurl = "ws://openab-gateway:8080/ws"\n'
)
CONFIG_2 = CONFIG_1 + "# second version\n[reactions]\nenabled = true\n"


@pytest.fixture
def plane(aws: AWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AWS:
    values = prepare_plane(aws.emulator, config=tmp_path / "oabctl.toml", bucket=PLANE)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    code, _, err = oabctl("init")
    assert code == 0, err
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=TENANT)
    s3.put_bucket_versioning(Bucket=TENANT, VersioningConfiguration={"Status": "Enabled"})
    return aws


def _manifest(s3: Any, config_from: str = URL) -> str:
    """MANIFEST with the networking ``oabctl init`` created in the emulator."""
    profile = read_cluster_profile(s3, PLANE)
    assert profile is not None
    return (
        MANIFEST.replace("SUBNET", profile.subnets[0])
        .replace("GROUP", profile.security_groups[0])
        .replace(URL, config_from)
    )


def _config_sha(ecs: Any, td_arn: str) -> str:
    td = ecs.describe_task_definition(taskDefinition=td_arn)["taskDefinition"]
    (init,) = [c for c in td["containerDefinitions"] if c["name"] == taskcontract.INIT_CONTAINER]
    env = {e["name"]: e["value"] for e in init["environment"]}
    return str(env[taskcontract.ENV_CONFIG_SHA256])


def test_a_new_object_version_is_found_by_the_resync_and_rolled_out(plane: AWS) -> None:
    s3 = plane.client("s3")
    first = s3.put_object(Bucket=TENANT, Key="team/bot/config.toml", Body=CONFIG_1.encode())[
        "VersionId"
    ]
    code, _, err = oabctl("apply", "-f", "-", stdin=_manifest(s3))
    assert code == 0, err
    settings = replica_settings(plane.emulator.endpoint, bucket=PLANE)
    with running_replica(settings) as replica:
        ddb, state = replica.dynamodb, replica.tables.state

        def available(version: str) -> AgentStatus | None:
            status = read_status(ddb, state, "team/bot")
            seen = status.secret_versions.get(CONFIG_VERSION_KEY)
            return status if available_at(status, 1) and seen == version else None

        running = wait_until(
            lambda: available(first), timeout=30, message="Running at generation 1"
        )
        ecs = replica.ecs_client
        assert _config_sha(ecs, running.task_definition_arn) == taskcontract.config_sha256(CONFIG_1)
        fence = wait_until(replica.elector.fence, timeout=10, message="leading")
        # Nothing changed: the resync enqueues nothing.
        assert "team/bot" not in replica.scheduler.resync(fence).enqueued

        second = s3.put_object(Bucket=TENANT, Key="team/bot/config.toml", Body=CONFIG_2.encode())[
            "VersionId"
        ]
        # No apply, no change record: only the resync's watch can notice.
        report = replica.scheduler.resync(fence)
        assert report.enqueued.get("team/bot") == "config-changed"
        rolled = wait_until(
            lambda: available(second), timeout=30, message="the new config version rolled out"
        )
        assert rolled.task_definition_arn != running.task_definition_arn
        assert (
            _config_sha(ecs, rolled.task_definition_arn)
            == hashlib.sha256(CONFIG_2.encode()).hexdigest()
        )
        assert rolled.watched_secrets[CONFIG_VERSION_KEY] == f"s3:{URL}"


def test_unreadable_config_objects_read_as_no_version_and_never_fail_the_batch(aws: AWS) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=TENANT)
    s3.put_object(Bucket=TENANT, Key="ok.toml", Body=CONFIG_1.encode())
    s3.put_object(Bucket=TENANT, Key="denied.toml", Body=CONFIG_1.encode())

    def deny(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == "denied.toml":
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")

    s3.meta.events.register("provide-client-params.s3.HeadObject", deny)
    versions = SecretVersions(
        ssm=aws.client("ssm"),
        secretsmanager=aws.client("secretsmanager"),
        s3=s3,
        limiter=RateLimiter({}),
    )
    refs = [
        ("s3", f"s3://{TENANT}/ok.toml"),
        ("s3", f"s3://{TENANT}/denied.toml"),
        ("s3", f"s3://{TENANT}/missing.toml"),
        ("s3", "s3://no-such-tenant-bucket/config.toml"),
    ]
    found = versions.batch(refs)
    etag = s3.head_object(Bucket=TENANT, Key="ok.toml")["ETag"]
    assert found == {refs[0]: etag, refs[1]: "", refs[2]: "", refs[3]: ""}

    def throttle(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "HeadObject")

    s3.meta.events.register("before-call.s3.HeadObject", throttle)
    with pytest.raises(AwsError) as info:  # throttled: the resync round is retried
        versions.batch(refs[:1])
    assert info.value.retryable


def test_config_from_the_control_plane_bucket_is_refused_before_any_read(plane: AWS) -> None:
    s3 = plane.client("s3")
    reads: list[str] = []
    s3.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: reads.append(params["Key"])
    )
    inside = f"s3://{PLANE}/artifacts/team/other/1/0123456789abcdef/config.toml"
    with pytest.raises(TerminalError, match="control-plane bucket") as info:
        ConfigObjects(s3, control_plane_bucket=PLANE).read(inside)
    assert info.value.reason == "PolicyViolation"
    assert reads == []
    code, _, err = oabctl("apply", "-f", "-", stdin=_manifest(s3, inside))
    assert code == 1
    assert "spec.configFrom" in err
    assert "control-plane bucket" in err
    assert s3.list_objects_v2(Bucket=PLANE, Prefix="manifests/").get("KeyCount", 0) == 0
