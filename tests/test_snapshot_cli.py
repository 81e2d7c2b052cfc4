"""``oabctl snapshot`` end to end: an in-process replica, the snapshot sidecar, the audit log.

Local AWS with the simulated ECS data plane; the sidecar is the real ``SnapshotSidecar`` driven
step by step, and the agent container's part (answering the inbox with a tar of HOME) is done
by the test, as the entry script would. Nothing of the project's own code is mocked.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from oab.controller import cli
from oab.controller.agent_sidecar import (
    FINAL_ARCHIVE,
    INBOX_REQUEST,
    SidecarConfig,
    SnapshotSidecar,
    record_key,
    request_key,
)
from oab.controller.api import AgentKey
from oab.controller.daemon_config import DaemonSettings
from oab.controller.localdataplane import DataPlaneControl
from oab.controller.replica import Replica
from oab.controller.snapshots import SNAPSHOT_ACTION
from oab.controller.status import AuditRecord, read_runlog, read_status
from oab.controller.testing import AWS, wait_until

CP = "oab-control-plane"
STATE = "agent-state"
BOOTSTRAP = f"s3://{STATE}/team/bot/home.tar.gz"

MANIFEST = """\
apiVersion: oab.dev/v1
kind: OABService
metadata:
  name: {name}
  namespace: team
spec:
  cpu: 256
  memory: 512
  taskDefinition:
    image: ghcr.io/openabdev/openab:v1
  {bootstrap}
  secrets:
    - name: DISCORD_BOT_TOKEN
      source: ssm
      path: /oab/team/{name}/discord-token
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


def _answer(sidecar: SnapshotSidecar, home: Path, name: str) -> None:
    """The agent container's side: ``tar -c -C $HOME .`` into the outbox."""
    sidecar.outbox.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.outbox / f".{name}.partial"
    with tarfile.open(tmp, "w") as tar:
        tar.add(home, arcname=".")
    tmp.replace(sidecar.outbox / name)


def _snapshot_calls(rows: list[AuditRecord]) -> list[Any]:
    return [c for r in rows for c in r.calls if c.action == SNAPSHOT_ACTION]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    (root / ".kiro").mkdir(parents=True)
    (root / ".kiro" / "memory.md").write_text("remember this")
    (root / ".aws").mkdir()
    (root / ".aws" / "credentials").write_text("aws_secret_access_key=PLANTED-NEVER")
    return root


@pytest.mark.slow
def test_snapshot_is_uploaded_and_lands_in_the_audit_log(
    aws: AWS, tmp_path: Path, home: Path
) -> None:
    DataPlaneControl(aws.emulator.endpoint).configure(start_delay_s=0.3, tick_s=0.05)
    env = {**os.environ, "OABCTL_CONFIG": str(tmp_path / "none"), "OAB_BUCKET": CP}
    assert oabctl(env, "init")[0] == 0
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=STATE)
    s3.put_bucket_versioning(Bucket=STATE, VersioningConfiguration={"Status": "Enabled"})
    for name in ("bot", "plain"):
        aws.client("ssm").put_parameter(
            Name=f"/oab/team/{name}/discord-token", Value="planted-value", Type="SecureString"
        )
    sidecar = SnapshotSidecar(
        s3,
        SidecarConfig(
            agent=AgentKey("team/bot"),
            bucket=CP,
            bootstrap_from=BOOTSTRAP,
            shared_dir=tmp_path / "oab",
        ),
    )
    replica = Replica(
        DaemonSettings(
            replica_id="r1",
            endpoint=aws.emulator.endpoint,
            bucket=CP,
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
        manifest = MANIFEST.format(name="bot", bootstrap=f"bootstrapFrom: {BOOTSTRAP}")
        assert oabctl(env, "apply", "-f", "-", stdin=manifest)[0] == 0
        plain = MANIFEST.format(name="plain", bootstrap="")
        assert oabctl(env, "apply", "-f", "-", stdin=plain)[0] == 0
        code, _, err = oabctl(
            env, "wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=60s"
        )
        assert code == 0, err

        # Preconditions: unknown agent and an agent without bootstrapFrom are refused (exit 1).
        code, _, err = oabctl(env, "snapshot", "ghost", "-n", "team")
        assert code == 1
        assert "ghost" in err
        code, _, err = oabctl(env, "snapshot", "plain", "-n", "team")
        assert code == 1
        assert "bootstrapFrom" in err

        # On demand: oabctl waits while the sidecar relays the request and uploads the answer.
        result: dict[str, Any] = {}

        def run() -> None:
            result["out"] = oabctl(
                env,
                "snapshot", "bot", "-n", "team",
                "--timeout", "60s", "--poll-interval", "0.1", "-o", "json",
            )  # fmt: skip

        thread = threading.Thread(target=run)
        thread.start()
        request = wait_until(sidecar.poll_requests, timeout=30, message="request relayed")
        assert (sidecar.inbox / INBOX_REQUEST).read_text() == request.id
        _answer(sidecar, home, f"snapshot-{request.id}.tar")
        [record] = sidecar.process_outbox()
        thread.join(60)
        code, out, err = result["out"]
        assert code == 0, err
        shown = json.loads(out)["record"]
        assert shown["id"] == request.id
        assert shown["versionId"] == record.version_id
        assert record.version_id
        assert shown["location"] == BOOTSTRAP
        with tarfile.open(
            fileobj=io.BytesIO(
                s3.get_object(Bucket=STATE, Key="team/bot/home.tar.gz")["Body"].read()
            )
        ) as tar:
            names = set(tar.getnames())
        assert any(n.endswith(".kiro/memory.md") for n in names)
        assert not any("credentials" in n for n in names)

        # The nudge makes the controller copy the record into the audit log.
        rows = wait_until(
            lambda: (
                (r := read_runlog(ddb, tables.runlog, "team/bot", newest_first=False))
                and _snapshot_calls(r)
                and r
            ),
            timeout=30,
            message="snapshot audit row",
        )
        [call] = _snapshot_calls(rows)
        assert (call.target, call.result) == (BOOTSTRAP, record.version_id)
        assert call.request_id == f"on-demand:{request.id}"
        assert read_status(ddb, tables.state, "team/bot").last_snapshot == record_key(record)
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        assert "PLANTED-NEVER" not in json.dumps([r.to_json() for r in rows])

        # A shutdown snapshot (SIGTERM during a deployment) reaches the log with the next run.
        _answer(sidecar, home, FINAL_ARCHIVE)
        [final] = sidecar.process_outbox()
        assert final.trigger == "shutdown"
        assert oabctl(env, "restart", "bot", "-n", "team")[0] == 0
        rows = wait_until(
            lambda: (
                len(_snapshot_calls(r := read_runlog(ddb, tables.runlog, "team/bot"))) == 2 and r
            ),
            timeout=30,
            message="shutdown snapshot audited",
        )
        assert {c.result for c in _snapshot_calls(rows)} == {record.version_id, final.version_id}

        # No sidecar answers: timeout (exit 1, with hints), then a conflict (exit 4), --cancel.
        code, _, err = oabctl(
            env, "snapshot", "bot", "-n", "team", "--timeout", "0.3s", "--poll-interval", "0.1"
        )
        assert code == 1
        assert "no snapshot record" in err
        assert "--cancel" in err
        code, _, err = oabctl(env, "snapshot", "bot", "-n", "team", "--no-wait")
        assert code == 4
        assert "already pending" in err
        code, out, _ = oabctl(env, "snapshot", "bot", "-n", "team", "--cancel")
        assert code == 0
        assert "cancelled snapshot request" in out
        assert "Contents" not in s3.list_objects_v2(Bucket=CP, Prefix=request_key("team/bot"))
        code, out, _ = oabctl(env, "snapshot", "bot", "-n", "team", "--no-wait")
        assert code == 0
        assert "requested" in out
    finally:
        replica.shutdown()
