"""oabctl wait/describe/restart/rollback/leader against a real replica (in-process) on local AWS.

The session emulator runs the simulated ECS data plane, so deployments complete and the status
machine, ``wait`` and the audit log behave as on AWS. Nothing of the project's own code is mocked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from oab.controller.adapters.state import read_runlog, read_status
from oab.controller.base.names import RESTART_ANNOTATION
from oab.controller.testing import (
    AWS,
    agent_manifest,
    oabctl,
    prepare_plane,
    replica_settings,
    running_replica,
    wait_until,
)


@pytest.mark.slow
def test_wait_describe_restart_rollback_with_a_replica(aws: AWS, tmp_path: Path) -> None:
    env = {**os.environ, **prepare_plane(aws.emulator, config=tmp_path / "none", init=True)}
    aws.client("ssm").put_parameter(
        Name="/oab/team/bot/discord-token", Value="planted-value", Type="SecureString"
    )
    settings = replica_settings(aws.emulator.endpoint, bucket="oab-control-plane")
    with running_replica(settings) as replica:
        ddb, tables = replica.dynamodb, replica.tables
        code, _, err = oabctl("apply", "-f", "-", stdin=agent_manifest(tag="v1"), env=env)
        assert code == 0, err
        code, out, err = oabctl(
            "wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=60s", env=env
        )
        assert code == 0, err
        assert "condition met" in out

        code, out, err = oabctl("describe", "bot", "-n", "team", "-o", "json", env=env)
        assert code == 0, err
        doc: dict[str, Any] = json.loads(out)
        assert doc["status"]["phase"] == "Running"
        assert doc["status"]["observedGeneration"] == 1
        assert doc["status"]["taskArns"]
        assert doc["recentRuns"]
        assert all(r["traceId"] for r in doc["recentRuns"])
        assert "planted-value" not in out

        code, out, _ = oabctl("leader", "-o", "json", env=env)
        assert code == 0
        assert json.loads(out)["holder"] == "r1"

        # restart: same generation, a new deployment forced by the annotation.
        first_td = read_status(ddb, tables.state, "team/bot").task_definition_arn
        rows_before = len(read_runlog(ddb, tables.runlog, "team/bot"))
        code, _, err = oabctl("restart", "bot", "-n", "team", env=env)
        assert code == 0, err
        marker = json.loads(oabctl("describe", "bot", "-n", "team", "-o", "json", env=env)[1])[
            "metadata"
        ]["annotations"][RESTART_ANNOTATION]
        restarted = wait_until(
            lambda: (
                (s := read_status(ddb, tables.state, "team/bot")).restart_marker == marker
                and s.phase == "Running"
                and s
            ),
            timeout=60,
            message="restart reconciled",
        )
        assert restarted.observed_generation == 1
        assert restarted.task_definition_arn == first_td  # no new revision for a restart
        runs = read_runlog(ddb, tables.runlog, "team/bot", newest_first=False)
        assert len(runs) > rows_before
        assert any(
            c.action in ("ecs:UpdateService", "ecs:CreateService")
            for r in runs[rows_before:]
            for c in r.calls
        )

        # rollback: generation 2 (v2) then back to generation 1's spec as generation 3.
        code, _, err = oabctl("apply", "-f", "-", stdin=agent_manifest(tag="v2"), env=env)
        assert code == 0, err
        assert (
            oabctl(
                "wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=60s", env=env
            )[0]
            == 0
        )
        code, out, err = oabctl("rollback", "bot", "-n", "team", "--to-generation", "1", env=env)
        assert code == 0, err
        assert "as generation 3" in out
        code, _, err = oabctl(
            "wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=60s", env=env
        )
        assert code == 0, err
        doc = json.loads(oabctl("describe", "bot", "-n", "team", "-o", "json", env=env)[1])
        assert doc["metadata"]["generation"] == 3
        assert doc["status"]["observedGeneration"] == 3
        assert doc["spec"]["image"].endswith(":v1")

        code, out, _ = oabctl("history", "bot", "-n", "team", "-o", "json", env=env)
        seqs = [r["seq"] for r in json.loads(out)["items"]]
        assert seqs == list(range(1, len(seqs) + 1))  # gap-free, oldest first
