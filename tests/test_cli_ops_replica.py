"""oabctl wait/describe/restart/rollback/leader against a real replica (in-process) on local AWS.

The session emulator runs the simulated ECS data plane, so deployments complete and the status
machine, ``wait`` and the audit log behave as on AWS. Nothing of the project's own code is mocked.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from oab.controller import cli
from oab.controller.cli_ops import RESTART_ANNOTATION
from oab.controller.daemon_config import DaemonSettings
from oab.controller.localdataplane import DataPlaneControl
from oab.controller.replica import Replica
from oab.controller.status import read_runlog, read_status
from oab.controller.testing import AWS, wait_until

MANIFEST = """\
apiVersion: oab.dev/v1
kind: OABService
metadata:
  name: bot
  namespace: team
spec:
  cpu: 256
  memory: 512
  taskDefinition:
    image: ghcr.io/openabdev/openab:{tag}
  secrets:
    - name: DISCORD_BOT_TOKEN
      source: ssm
      path: /oab/team/bot/discord-token
  config:
    agent:
      preset: kiro
    discord:
      bot_token: ${{DISCORD_BOT_TOKEN}}
      allowed_channels: ["123456789012345678"]
"""


def oabctl(env: dict[str, str], *argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin), env=env)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_wait_describe_restart_rollback_with_a_replica(aws: AWS, tmp_path: Path) -> None:
    DataPlaneControl(aws.emulator.endpoint).configure(start_delay_s=0.3, tick_s=0.05)
    env = {**os.environ, "OABCTL_CONFIG": str(tmp_path / "none")}
    assert oabctl(env, "init")[0] == 0
    aws.client("ssm").put_parameter(
        Name="/oab/team/bot/discord-token", Value="planted-value", Type="SecureString"
    )
    replica = Replica(
        DaemonSettings(
            replica_id="r1",
            endpoint=aws.emulator.endpoint,
            bucket="oab-control-plane",
            change_poll_s=0.1,
            idle_poll_s=0.1,
            progress_poll_s=0.3,
            workers=2,
            lease_duration_s=3.0,
            renew_deadline_s=2.0,
            retry_period_s=0.5,
        )
    )
    replica.start()
    try:
        ddb, tables = replica.dynamodb, replica.tables
        code, _, err = oabctl(env, "apply", "-f", "-", stdin=MANIFEST.format(tag="v1"))
        assert code == 0, err
        code, out, err = oabctl(
            env, "wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=60s"
        )
        assert code == 0, err
        assert "condition met" in out

        code, out, err = oabctl(env, "describe", "bot", "-n", "team", "-o", "json")
        assert code == 0, err
        doc: dict[str, Any] = json.loads(out)
        assert doc["status"]["phase"] == "Running"
        assert doc["status"]["observedGeneration"] == 1
        assert doc["status"]["taskArns"]
        assert doc["recentRuns"]
        assert all(r["traceId"] for r in doc["recentRuns"])
        assert "planted-value" not in out

        code, out, _ = oabctl(env, "leader", "-o", "json")
        assert code == 0
        assert json.loads(out)["holder"] == "r1"

        # restart: same generation, a new deployment forced by the annotation.
        first_td = read_status(ddb, tables.state, "team/bot").task_definition_arn
        rows_before = len(read_runlog(ddb, tables.runlog, "team/bot"))
        code, _, err = oabctl(env, "restart", "bot", "-n", "team")
        assert code == 0, err
        marker = json.loads(oabctl(env, "describe", "bot", "-n", "team", "-o", "json")[1])[
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
        code, _, err = oabctl(env, "apply", "-f", "-", stdin=MANIFEST.format(tag="v2"))
        assert code == 0, err
        assert (
            oabctl(env, "wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=60s")[
                0
            ]
            == 0
        )
        code, out, err = oabctl(env, "rollback", "bot", "-n", "team", "--to-generation", "1")
        assert code == 0, err
        assert "as generation 3" in out
        code, _, err = oabctl(
            env, "wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=60s"
        )
        assert code == 0, err
        doc = json.loads(oabctl(env, "describe", "bot", "-n", "team", "-o", "json")[1])
        assert doc["metadata"]["generation"] == 3
        assert doc["status"]["observedGeneration"] == 3
        assert doc["spec"]["image"].endswith(":v1")

        code, out, _ = oabctl(env, "history", "bot", "-n", "team", "-o", "json")
        seqs = [r["seq"] for r in json.loads(out)["items"]]
        assert seqs == list(range(1, len(seqs) + 1))  # gap-free, oldest first
    finally:
        replica.shutdown()
