"""Init container and snapshot sidecar against the local emulator's S3."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from oab.controller.adapters.snapshots import request_snapshot, wait_snapshot
from oab.controller.agent import main as agent
from oab.controller.agent.archive import Denylist, UnsafeArchiveError, create_archive
from oab.controller.agent.main import InitConfig, run_init
from oab.controller.agent.sidecar import SidecarConfig, SnapshotSidecar
from oab.controller.api.service import AgentKey
from oab.controller.base import taskcontract
from oab.controller.base.names import snapshot_request_key
from oab.controller.core.snapshot import (
    SnapshotAlreadyRequested,
    SnapshotError,
    SnapshotFailed,
    SnapshotRecord,
    SnapshotTimeout,
)
from oab.controller.testing import AWS, FakeClock, SequentialIds

CP = "oab-control-plane"
STATE = "agent-state"
KEY = AgentKey("team/bot")
BOOTSTRAP = f"s3://{STATE}/team/bot/home.tar.gz"
ARTIFACT = f"s3://{CP}/artifacts/team/bot/7/config.toml"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def s3(aws: AWS) -> Any:
    client = aws.client("s3")
    for bucket in (CP, STATE):
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket=CP, Key="artifacts/team/bot/7/config.toml", Body=b"[agent]\n")
    return client


def _home(root: Path) -> Path:
    (root / ".kiro").mkdir(parents=True)
    (root / ".kiro" / "memory.md").write_text("state")
    (root / ".aws").mkdir()
    (root / ".aws" / "credentials").write_text("aws_secret_access_key=NEVER")
    (root / "config.toml").write_text("stale")
    return root


def _tar_of(home: Path, out: Path) -> Path:
    """What the entry script's ``tar -c -C $HOME .`` writes (no filtering)."""
    with tarfile.open(out, "w") as tar:
        tar.add(home, arcname=".")
    return out


def _names(s3: Any, bucket: str, key: str) -> set[str]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return set(tar.getnames())


# -- init -------------------------------------------------------------------------------------


def test_init_restores_then_writes_config_last(s3: Any, tmp_path: Path) -> None:
    archive = create_archive(_home(tmp_path / "h"), tmp_path / "a.tar.gz", Denylist())
    assert archive.members == 3  # .kiro, its file, an empty .aws: credentials and config dropped
    s3.upload_file(str(tmp_path / "a.tar.gz"), STATE, "team/bot/home.tar.gz")
    shared = tmp_path / "oab"
    result = run_init(
        s3, InitConfig(config_artifact=ARTIFACT, bootstrap_from=BOOTSTRAP, shared_dir=shared)
    )
    assert (shared / "config.toml").read_bytes() == b"[agent]\n"
    assert result.restored is not None
    assert result.restored.members == 3
    with tarfile.open(shared / "home.tar") as tar:
        assert set(tar.getnames()) == {".aws", ".kiro", ".kiro/memory.md"}
    assert (shared / "inbox").stat().st_mode & 0o7777 == 0o777  # any uid, no sticky bit
    assert sorted(p.name for p in shared.iterdir()) == [
        "config.toml",
        "home.tar",
        "inbox",
        "outbox",
    ]


def test_init_without_a_snapshot_yet_starts_clean(s3: Any, tmp_path: Path) -> None:
    shared = tmp_path / "oab"
    result = run_init(
        s3, InitConfig(config_artifact=ARTIFACT, bootstrap_from=BOOTSTRAP, shared_dir=shared)
    )
    assert result.restored is None
    assert not (shared / "home.tar").exists()
    assert (shared / "config.toml").exists()


def test_init_refuses_a_hostile_archive_and_writes_no_config(s3: Any, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../etc/cron.d/evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    s3.put_object(Bucket=STATE, Key="team/bot/home.tar.gz", Body=buf.getvalue())
    shared = tmp_path / "oab"
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.' in path"):
        run_init(
            s3, InitConfig(config_artifact=ARTIFACT, bootstrap_from=BOOTSTRAP, shared_dir=shared)
        )
    assert not (shared / "config.toml").exists()
    assert not (shared / "home.tar").exists()


def test_main_exit_codes(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAB_SHARED_DIR", str(tmp_path / "oab"))
    monkeypatch.setenv(taskcontract.ENV_CONFIG_ARTIFACT, ARTIFACT)
    monkeypatch.delenv(taskcontract.ENV_BOOTSTRAP_FROM, raising=False)
    assert agent.main(["init"]) == 0
    monkeypatch.setenv(
        taskcontract.ENV_CONFIG_ARTIFACT, f"s3://{CP}/artifacts/team/bot/8/config.toml"
    )
    assert agent.main(["init"]) == agent.EX_UNAVAILABLE  # config artifact missing
    monkeypatch.setenv(taskcontract.ENV_CONFIG_ARTIFACT, "not-a-url")
    assert agent.main(["init"]) == agent.EX_CONFIG
    s3.put_object(Bucket=STATE, Key="team/bot/home.tar.gz", Body=b"not a tar at all")
    monkeypatch.setenv(taskcontract.ENV_CONFIG_ARTIFACT, ARTIFACT)
    monkeypatch.setenv(taskcontract.ENV_BOOTSTRAP_FROM, BOOTSTRAP)
    assert agent.main(["init"]) == agent.EX_DATAERR


# -- tamper-evident config artifact -------------------------------------------------------------


def _rendered_example() -> tuple[dict[str, str], bytes]:
    """The init container's environment and the artifact bytes, as render and reconcile make
    them for examples/ (the reconciler uploads ``render_config_toml(svc).encode()``)."""
    from oab.controller.api.document import parse_document
    from oab.controller.core.render import RenderContext, render_agent

    doc = yaml.safe_load((ROOT / "examples" / "kiro-discord.yaml").read_text())
    svc = parse_document(doc)
    ctx = RenderContext(
        region="us-east-1",
        bucket=CP,
        cluster="oab",
        agent_image="ghcr.io/openabdev/oab-controller:0.1.0",
        execution_role_arn="arn:aws:iam::{account}:role/x",
        task_role_arn="arn:aws:iam::{account}:role/y",
        account_id="123456789012",
        default_subnets=("subnet-0ddd0000",),
        default_security_groups=("sg-0eee0000",),
    )
    rendered = render_agent(svc, ctx)
    init = rendered.task_definition["containerDefinitions"][0]
    assert init["name"] == taskcontract.INIT_CONTAINER
    env = {e["name"]: e["value"] for e in init["environment"]}
    return env, rendered.config_toml.encode()


def _put_artifact(s3: Any, env: dict[str, str], body: bytes) -> None:
    bucket, key = agent.parse_s3_url(env[taskcontract.ENV_CONFIG_ARTIFACT])
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_init_accepts_the_artifact_the_task_definition_was_rendered_for(
    s3: Any, tmp_path: Path
) -> None:
    env, body = _rendered_example()
    assert taskcontract.ENV_CONFIG_SHA256 in env
    _put_artifact(s3, env, body)
    config = agent.init_config_from_env({**env, "OAB_SHARED_DIR": str(tmp_path / "oab")})
    run_init(s3, config)
    assert (tmp_path / "oab" / "config.toml").read_bytes() == body


def test_init_refuses_a_tampered_artifact_and_starts_nothing(s3: Any, tmp_path: Path) -> None:
    env, body = _rendered_example()
    _put_artifact(s3, env, body + b'\n[gateway]\nurl = "wss://attacker.example"\n')
    archive = create_archive(_home(tmp_path / "h"), tmp_path / "a.tar.gz", Denylist())
    assert archive.members
    s3.upload_file(str(tmp_path / "a.tar.gz"), STATE, "team/bot/home.tar.gz")
    shared = tmp_path / "oab"
    config = agent.init_config_from_env(
        {**env, taskcontract.ENV_BOOTSTRAP_FROM: BOOTSTRAP, "OAB_SHARED_DIR": str(shared)}
    )
    with pytest.raises(agent.ConfigMismatchError, match="changed after the controller wrote"):
        run_init(s3, config)
    assert not (shared / "config.toml").exists()
    assert not (shared / "home.tar").exists()  # checked before the archive was fetched


def test_a_task_definition_without_the_digest_keeps_todays_behaviour(
    s3: Any, tmp_path: Path
) -> None:
    env, _body = _rendered_example()
    del env[taskcontract.ENV_CONFIG_SHA256]
    _put_artifact(s3, env, b"anything the bucket holds")
    config = agent.init_config_from_env({**env, "OAB_SHARED_DIR": str(tmp_path / "oab")})
    run_init(s3, config)
    assert (tmp_path / "oab" / "config.toml").read_bytes() == b"anything the bucket holds"


def test_main_exits_65_for_a_tampered_artifact_or_a_truncated_archive(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env, body = _rendered_example()
    _put_artifact(s3, env, body.replace(b"kiro-cli", b"evil-cli"))
    for name, value in {**env, "OAB_SHARED_DIR": str(tmp_path / "oab")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(taskcontract.ENV_BOOTSTRAP_FROM, raising=False)
    assert agent.main(["init"]) == agent.EX_DATAERR
    err = capsys.readouterr().err
    assert "was rendered for" in err
    assert "Traceback" not in err
    _put_artifact(s3, env, body)
    s3.put_object(Bucket=STATE, Key="team/bot/home.tar.gz", Body=gzip.compress(b"x" * 4096)[:-20])
    monkeypatch.setenv(taskcontract.ENV_BOOTSTRAP_FROM, BOOTSTRAP)
    assert agent.main(["init"]) == agent.EX_DATAERR
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err
    assert "Traceback" not in err
    monkeypatch.setenv(taskcontract.ENV_CONFIG_SHA256, "NOT-HEX")
    assert agent.main(["init"]) == agent.EX_CONFIG


def test_sidecar_settings_from_env() -> None:
    config = agent.sidecar_config_from_env(
        {
            taskcontract.ENV_BUCKET: CP,
            taskcontract.ENV_NAMESPACE: "team",
            taskcontract.ENV_NAME: "bot",
            taskcontract.ENV_BOOTSTRAP_FROM: BOOTSTRAP,
            taskcontract.ENV_DENYLIST: "notes/private,\n*.sqlite",
            taskcontract.ENV_POLL_SECONDS: "15",
        }
    )
    assert config.agent == KEY
    assert config.request_poll_interval == 15
    assert config.denylist.matches("notes/private/x")
    assert config.denylist.matches("a/b.sqlite")
    assert config.denylist.matches(".codex/auth.json")  # defaults kept


# -- sidecar ----------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _sidecar(
    s3: Any, tmp_path: Path, clock: FakeClock, **overrides: Any
) -> tuple[SnapshotSidecar, list[SnapshotRecord]]:
    settings: dict[str, Any] = {
        "agent": KEY,
        "bucket": CP,
        "bootstrap_from": BOOTSTRAP,
        "shared_dir": tmp_path / "oab",
        "request_timeout": 30.0,
        "final_timeout": 20.0,
    }
    settings.update(overrides)
    audit: list[SnapshotRecord] = []
    sidecar = SnapshotSidecar(
        s3, SidecarConfig(**settings), clock=clock, new_id=SequentialIds("s"), recorders=[]
    )
    sidecar.add_recorder(audit.append)
    return sidecar, audit


def test_on_demand_snapshot_end_to_end(s3: Any, tmp_path: Path, clock: FakeClock) -> None:
    sidecar, audit = _sidecar(s3, tmp_path, clock)
    request = request_snapshot(s3, CP, KEY, clock=clock, new_id=SequentialIds("req"))
    with pytest.raises(SnapshotAlreadyRequested) as second:
        request_snapshot(s3, CP, KEY, clock=clock)
    assert second.value.pending == request

    assert sidecar.poll_requests() == request
    assert (sidecar.inbox / "snapshot-request").read_text() == request.id
    assert sidecar.poll_requests() is None  # one at a time
    # The agent container answers (the init container created the outbox).
    sidecar.outbox.mkdir(parents=True)
    _tar_of(_home(tmp_path / "home"), sidecar.outbox / f"snapshot-{request.id}.tar")
    [record] = sidecar.process_outbox()
    assert record.status == "uploaded"
    assert record.trigger == "on-demand"
    assert record.version_id
    assert record.excluded == 2
    assert audit == [record]
    assert sidecar.pending is None
    assert list(sidecar.outbox.iterdir()) == []
    assert _names(s3, STATE, "team/bot/home.tar.gz") == {".aws", ".kiro", ".kiro/memory.md"}
    # The request is gone, so the next one can be made; the waiter finds the record.
    assert "Contents" not in s3.list_objects_v2(Bucket=CP, Prefix=snapshot_request_key(KEY))
    assert wait_snapshot(s3, CP, request, timeout=5, clock=clock) == record


def test_each_snapshot_is_a_new_object_version(s3: Any, tmp_path: Path, clock: FakeClock) -> None:
    sidecar, _ = _sidecar(s3, tmp_path, clock)
    home = _home(tmp_path / "home")
    sidecar.outbox.mkdir(parents=True)
    first = _tar_of(home, sidecar.outbox / "snapshot-a.tar")
    [one] = sidecar.process_outbox()
    (home / "second.md").write_text("more")
    _tar_of(home, first)
    clock.advance(1)
    [two] = sidecar.process_outbox()
    assert one.version_id != two.version_id
    versions = s3.list_object_versions(Bucket=STATE, Prefix="team/bot/home.tar.gz")["Versions"]
    assert {v["VersionId"] for v in versions} == {one.version_id, two.version_id}


def test_unanswered_request_fails_and_frees_the_slot(
    s3: Any, tmp_path: Path, clock: FakeClock
) -> None:
    sidecar, audit = _sidecar(s3, tmp_path, clock)
    request = request_snapshot(s3, CP, KEY, clock=clock)
    sidecar.poll_requests()
    assert not sidecar.expire()
    clock.advance(31)
    assert sidecar.expire()
    assert [r.status for r in audit] == ["failed"]
    assert not (sidecar.inbox / "snapshot-request").exists()
    with pytest.raises(SnapshotFailed, match="did not answer within 30 s"):
        wait_snapshot(s3, CP, request, timeout=5, clock=clock)
    request_snapshot(s3, CP, KEY, clock=clock)  # the slot is free again


def test_request_for_an_agent_without_bootstrap_location_fails(
    s3: Any, tmp_path: Path, clock: FakeClock
) -> None:
    sidecar, _ = _sidecar(s3, tmp_path, clock, bootstrap_from=None)
    request = request_snapshot(s3, CP, KEY, clock=clock)
    assert sidecar.poll_requests() is None
    with pytest.raises(SnapshotFailed, match="no bootstrapFrom"):
        wait_snapshot(s3, CP, request, timeout=5, clock=clock)


def test_wait_snapshot_times_out_on_the_injected_clock(
    s3: Any, tmp_path: Path, clock: FakeClock
) -> None:
    request = request_snapshot(s3, CP, KEY, clock=clock)
    start = clock.monotonic()
    with pytest.raises(SnapshotTimeout, match="is the agent running"):
        wait_snapshot(s3, CP, request, timeout=60, interval=5, clock=clock)
    assert clock.monotonic() - start >= 60


def test_shutdown_uploads_the_final_archive(s3: Any, tmp_path: Path, clock: FakeClock) -> None:
    sidecar, audit = _sidecar(s3, tmp_path, clock)
    sidecar.outbox.mkdir(parents=True)
    _tar_of(_home(tmp_path / "home"), sidecar.outbox / "home.tar")
    record = sidecar.finish()
    assert record is not None
    assert (record.trigger, record.status) == ("shutdown", "uploaded")
    assert audit == [record]
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=CP, Prefix="snapshots/team/bot/")["Contents"]
    ]
    assert len(keys) == 1
    assert keys[0].endswith(f"-{record.id}.json")
    stored = SnapshotRecord.from_json(s3.get_object(Bucket=CP, Key=keys[0])["Body"].read())
    assert stored == record


def test_shutdown_returns_early_when_the_agent_left_nothing(
    s3: Any, tmp_path: Path, clock: FakeClock
) -> None:
    sidecar, audit = _sidecar(s3, tmp_path, clock)
    sidecar.outbox.mkdir(parents=True)
    (sidecar.outbox / "exited").write_text("1\n")
    start = clock.monotonic()
    assert sidecar.finish() is None
    assert clock.monotonic() == start
    assert audit == []


def test_shutdown_wait_is_bounded(s3: Any, tmp_path: Path, clock: FakeClock) -> None:
    sidecar, audit = _sidecar(s3, tmp_path, clock)
    start = clock.monotonic()
    record = sidecar.finish()
    assert record is not None
    assert record.status == "failed"
    assert "no final archive within 20 s" in (record.error or "")
    assert 20 <= clock.monotonic() - start <= 22
    assert audit == [record]


# -- agent-written records are untrusted -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "malformed snapshot record"),
        (b'{"agent": "team/bot"}', "bad fields: id"),
        (
            b'{"agent": "team/bot", "id": "x", "trigger": "shutdown", "status": "uploaded",'
            b' "taken_at": "yesterday"}',
            "bad fields: taken_at",
        ),
        (b'{"agent": "team/bot", "id": ' + b"[" * 5000 + b"]" * 5000 + b"}", "malformed"),
        (b'{"pad": "' + b"x" * 70_000 + b'"}', "larger than 65536 bytes"),
    ],
    ids=["not-json", "missing-fields", "wrong-type", "deep", "huge"],
)
def test_malformed_records_are_snapshot_errors(body: bytes, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        SnapshotRecord.from_json(body)


def test_wait_snapshot_reports_a_malformed_record_as_an_error(s3: Any, clock: FakeClock) -> None:
    request = request_snapshot(s3, CP, KEY, clock=clock, new_id=SequentialIds("req"))
    key = f"snapshots/team/bot/29991231T000000.000Z-{request.id}.json"
    s3.put_object(Bucket=CP, Key=key, Body=b'{"agent": "team/bot", "id": 7}')
    with pytest.raises(SnapshotError, match="malformed snapshot record"):
        wait_snapshot(s3, CP, request, timeout=0, clock=clock)


def test_failure_records_are_scrubbed_and_bounded(
    s3: Any, tmp_path: Path, clock: FakeClock
) -> None:
    secret = "ghp" + "_" + "a1B2c3D4e5" * 4
    sidecar, audit = _sidecar(s3, tmp_path, clock)
    sidecar.outbox.mkdir(parents=True)
    with tarfile.open(sidecar.outbox / "home.tar", "w") as tar:
        info = tarfile.TarInfo(f"../{secret}/" + "d" * 3000)
        tar.addfile(info, io.BytesIO(b""))
    [record] = sidecar.process_outbox()
    assert record.status == "failed"
    assert record.error is not None
    assert secret not in record.error
    assert "[REDACTED]" in record.error
    assert len(record.error) <= 2000
    assert audit == [record]
