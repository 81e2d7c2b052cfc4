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

from oab.controller.adapters.snapshots import SNAPSHOT_ACTION
from oab.controller.adapters.state import read_runlog, read_status
from oab.controller.agent.sidecar import (
    FINAL_ARCHIVE,
    INBOX_REQUEST,
    SidecarConfig,
    SnapshotSidecar,
)
from oab.controller.api.service import AgentKey
from oab.controller.base.names import snapshot_request_key
from oab.controller.core.snapshot import record_key
from oab.controller.core.status import AuditRecord
from oab.controller.testing import (
    AWS,
    agent_manifest,
    oabctl,
    prepare_plane,
    replica_settings,
    running_replica,
    wait_until,
)

CP = "oab-control-plane"
STATE = "agent-state"
BOOTSTRAP = f"s3://{STATE}/team/bot/home.tar.gz"


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
    plane = prepare_plane(aws.emulator, config=tmp_path / "none", bucket=CP, init=True)
    env = {**os.environ, **plane}
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
    with running_replica(replica_settings(aws.emulator.endpoint, bucket=CP)) as replica:
        ddb, tables = replica.dynamodb, replica.tables
        manifest = agent_manifest("bot", bootstrap_from=BOOTSTRAP)
        assert oabctl("apply", "-f", "-", stdin=manifest, env=env)[0] == 0
        plain = agent_manifest("plain")
        assert oabctl("apply", "-f", "-", stdin=plain, env=env)[0] == 0
        code, _, err = oabctl(
            "wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=60s", env=env
        )
        assert code == 0, err

        # Preconditions: unknown agent and an agent without bootstrapFrom are refused (exit 1).
        code, _, err = oabctl("snapshot", "ghost", "-n", "team", env=env)
        assert code == 1
        assert "ghost" in err
        code, _, err = oabctl("snapshot", "plain", "-n", "team", env=env)
        assert code == 1
        assert "bootstrapFrom" in err

        # On demand: oabctl waits while the sidecar relays the request and uploads the answer.
        result: dict[str, Any] = {}

        def run() -> None:
            result["out"] = oabctl(
                "snapshot", "bot", "-n", "team",
                "--timeout", "60s", "--poll-interval", "0.1", "-o", "json", env=env,
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
        assert oabctl("restart", "bot", "-n", "team", env=env)[0] == 0
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
            "snapshot", "bot", "-n", "team", "--timeout", "0.3s", "--poll-interval", "0.1", env=env
        )
        assert code == 1
        assert "no snapshot record" in err
        assert "--cancel" in err
        code, _, err = oabctl("snapshot", "bot", "-n", "team", "--no-wait", env=env)
        assert code == 4
        assert "already pending" in err
        code, out, _ = oabctl("snapshot", "bot", "-n", "team", "--cancel", env=env)
        assert code == 0
        assert "cancelled snapshot request" in out
        assert "Contents" not in s3.list_objects_v2(
            Bucket=CP, Prefix=snapshot_request_key("team/bot")
        )
        code, out, _ = oabctl("snapshot", "bot", "-n", "team", "--no-wait", env=env)
        assert code == 0
        assert "requested" in out
