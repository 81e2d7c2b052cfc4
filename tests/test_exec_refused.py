"""``ExecRefused`` end to end: a replica's worker parks the agent with that reason and ``oabctl``
shows it (``get -o wide`` REASON, ``describe``, ``queue``).

The replica runs in-process (``running_replica``) on the session emulator with its simulated ECS
data plane. ECS's refusal is injected at the AWS boundary: a botocore handler registered for
every session created afterwards (the replica builds its own clients) answers a
``CreateService`` that turns ECS Exec on with ``InvalidParameterException``, as ECS does when
the platform version or the cluster cannot run ECS Exec. Nothing of the project is mocked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import botocore.handlers
import pytest
from botocore.exceptions import ClientError

from oab.controller.adapters.state import read_status
from oab.controller.testing import (
    AWS,
    agent_manifest,
    oabctl,
    prepare_plane,
    replica_settings,
    running_replica,
    wait_until,
)

REFUSAL = "The platform version does not support execute command."


def _refuse_exec(params: dict[str, Any], **_: Any) -> None:
    if params.get("enableExecuteCommand"):
        raise ClientError(
            {
                "Error": {"Code": "InvalidParameterException", "Message": REFUSAL},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "CreateService",
        )


def test_ecs_refusing_exec_parks_the_agent_and_oabctl_shows_exec_refused(
    aws: AWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, **prepare_plane(aws.emulator, config=tmp_path / "none", init=True)}
    aws.client("ssm").put_parameter(
        Name="/oab/team/bot/discord-token", Value="planted-9f8e7d", Type="SecureString"
    )
    monkeypatch.setattr(
        botocore.handlers,
        "BUILTIN_HANDLERS",
        [
            *botocore.handlers.BUILTIN_HANDLERS,
            ("provide-client-params.ecs.CreateService", _refuse_exec),
        ],
    )
    manifest = agent_manifest().replace("spec:\n", "spec:\n  exec: true\n", 1)
    settings = replica_settings(aws.emulator.endpoint, bucket="oab-control-plane")
    with running_replica(settings) as replica:
        assert oabctl("apply", "-f", "-", stdin=manifest, env=env).code == 0

        def parked() -> Any:
            queue = oabctl("queue", "-o", "json", env=env).ok()  # empty while no unit exists
            units = json.loads(queue or '{"items": []}')["items"]
            return next(
                (u for u in units if u["key"] == "team/bot" and u["state"] == "parked"), None
            )

        unit = wait_until(parked, timeout=60, message="the agent's unit parked")
        status = read_status(replica.dynamodb, replica.tables.state, "team/bot")

    assert status is not None
    assert status.phase == "Failed"
    assert unit["last_error"].startswith("ECS refused ECS Exec")
    degraded = status.condition("Degraded")
    assert degraded is not None
    assert (degraded.status, degraded.reason) == ("True", "ExecRefused")
    assert "spec.exec: false" in degraded.message
    assert REFUSAL in degraded.message
    assert aws.client("ecs").list_services(cluster="oab")["serviceArns"] == []

    wide = oabctl("get", "bot", "-n", "team", "-o", "wide", env=env).ok()
    header, row = wide.splitlines()[:2]
    assert "REASON" in header.split()
    assert "ExecRefused" in row.split()
    described = oabctl("describe", "bot", "-n", "team", env=env).ok()
    assert "ExecRefused" in described
    assert "spec.exec: false" in described
