"""The reconcile loop end to end in one process: scheduler + workers against local AWS.

Real emulator with the simulated ECS data plane; nothing of the project's own code is mocked.
Multi-replica behaviour (3 processes, failover) is covered by the daemon tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from oab.controller.adapters.state import read_runlog, read_status
from oab.controller.local.emulator import LocalAWS, start
from oab.controller.testing import (
    agent_manifest,
    oabctl,
    prepare_plane,
    replica_settings,
    running_replica,
    wait_until,
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[LocalAWS]:
    with start(dataplane=True) as handle:
        yield handle


@pytest.fixture
def env(emulator: LocalAWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = prepare_plane(
        emulator, config=tmp_path / "oabctl.toml", bucket="oab-test-plane", reset=True
    )
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def apply(namespace: str, name: str, tag: str = "v1") -> None:
    manifest = agent_manifest(name, namespace=namespace, tag=tag, auto_restart=True)
    code, out, err = oabctl("apply", "-f", "-", stdin=manifest)
    assert code == 0, err
    assert name in out


def put_secret(ssm: Any, namespace: str, name: str, value: str) -> None:
    ssm.put_parameter(
        Name=f"/oab/{namespace}/{name}/discord-token",
        Value=value,
        Type="SecureString",
        Overwrite=True,
    )


def test_apply_update_restart_rotate_delete(env: dict[str, str]) -> None:
    code, _, err = oabctl("init")
    assert code == 0, err
    ssm = boto3.client("ssm", region_name="us-east-1")
    put_secret(ssm, "team", "bot", "planted-secret-value-1")
    settings = replica_settings(env["AWS_ENDPOINT_URL"], bucket=env["OAB_BUCKET"])
    with running_replica(settings) as replica:
        ddb, state = replica.dynamodb, replica.tables.state

        def phase_is(phase: str, generation: int) -> Any:
            s = read_status(ddb, state, "team/bot")
            ok = s.phase == phase and s.observed_generation == generation
            avail = s.condition("Available")
            return s if ok and avail is not None and avail.status == "True" else None

        apply("team", "bot")
        first = wait_until(lambda: phase_is("Running", 1), timeout=30, message="Running gen 1")
        assert first.task_arns
        assert first.service_arn

        apply("team", "bot", tag="v2")
        second = wait_until(lambda: phase_is("Running", 2), timeout=30, message="Running gen 2")
        assert second.task_definition_arn != first.task_definition_arn

        # Rotation of an autoRestart secret forces a new deployment (resync finds the version).
        put_secret(ssm, "team", "bot", "planted-secret-value-2")
        replica.scheduler.resync(replica.elector.fence())
        rotated = wait_until(
            lambda: (
                (s := read_status(ddb, state, "team/bot")).condition("SecretsRefreshed")
                and s.phase == "Running"
                and s
            ),
            timeout=30,
            message="SecretsRefreshed",
        )
        assert rotated.secret_versions["DISCORD_BOT_TOKEN"] == "2"

        code, _, err = oabctl("delete", "bot", "-n", "team")
        assert code == 0, err
        wait_until(
            lambda: (
                read_status(ddb, state, "team/bot").phase is None
                and read_status(ddb, state, "team/bot").audit_seq > 0
            ),
            timeout=30,
            message="deletion finished",
        )
        ecs = replica.ecs_client
        svc = ecs.describe_services(cluster="oab", services=["oab-team-bot"])["services"]
        assert all(s["status"] == "INACTIVE" for s in svc)
        assert (
            ecs.list_task_definitions(familyPrefix="oab-team-bot", status="ACTIVE")[
                "taskDefinitionArns"
            ]
            == []
        )
        rows = read_runlog(ddb, replica.tables.runlog, "team/bot", newest_first=False)
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        creates = [c for r in rows for c in r.calls if c.action == "ecs:CreateService"]
        registers = [c for r in rows for c in r.calls if c.action == "ecs:RegisterTaskDefinition"]
        assert len(creates) == 1
        assert len(registers) == 2  # one per generation; the restart reused generation 2's
        blob = json.dumps([r.to_json() for r in rows])
        assert "planted-secret-value" not in blob
