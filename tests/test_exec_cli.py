"""oabctl exec and cp against local AWS, with a fake session-manager-plugin on PATH.

The fake plugin (written per test into tmp_path) records its argv and environment, asks the
simulated data plane what its session was opened for, runs that command in a directory that
plays the container's file system, and prints like the real plugin on a pseudo-terminal
(banners on stdout, CRLF line ends), so the handover and cp's framing are both checked.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from oab.controller.adapters.execsession import SESSION_ENV
from oab.controller.cli.exec import CopyError, extract_archive, parse_download
from oab.controller.local.dataplane import DataPlaneControl
from oab.controller.testing import AWS, agent_manifest, oabctl, prepare_plane, wait_until

FAKE_PLUGIN = r"""#!{python}
import json, os, shlex, subprocess, sys, urllib.request
if sys.argv[1:] == ["--version"]:
    print(os.environ.get("FAKE_PLUGIN_VERSION", "1.2.707.0"))
    sys.exit(0)
first = sys.argv[1]
session = json.loads(os.environ[first] if first == "{env}" else first)
with open(os.environ["FAKE_PLUGIN_LOG"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "session": session}}) + "\n")
endpoint = sys.argv[6]
with urllib.request.urlopen(endpoint + "/_oab/dataplane/exec/" + session["sessionId"]) as r:
    info = json.load(r)
target = json.loads(sys.argv[5])["Target"]
task_id = info["taskArn"].rsplit("/", 1)[-1]
assert target == "ecs:%s_%s_%s" % (info["cluster"], task_id, info["runtimeId"]), target
out = sys.stdout.buffer
out.write(b"\r\nStarting session with SessionId: " + session["sessionId"].encode() + b"\r\n")
out.flush()
proc = subprocess.run(shlex.split(info["command"]), cwd=os.environ["FAKE_CONTAINER_ROOT"],
                      stdin=sys.stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
out.write(proc.stdout.replace(b"\n", b"\r\n"))
out.write(b"\r\n\r\nExiting session with sessionId: " + session["sessionId"].encode() + b".\r\n")
"""


def exec_manifest(*, on: bool = True) -> str:
    return agent_manifest().replace("spec:\n", f"spec:\n  exec: {'true' if on else 'false'}\n", 1)


@pytest.fixture
def env(aws: AWS, tmp_path: Path) -> dict[str, str]:
    """oabctl's environment: local AWS, the fake plugin first on PATH, a container root."""
    overlay = prepare_plane(aws.emulator, config=tmp_path / "none.toml", init=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    plugin = bin_dir / "session-manager-plugin"
    plugin.write_text(FAKE_PLUGIN.format(python=sys.executable, env=SESSION_ENV))
    plugin.chmod(0o755)
    root = tmp_path / "container"
    root.mkdir()
    return {
        **os.environ,
        **overlay,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FAKE_PLUGIN_LOG": str(tmp_path / "plugin.log"),
        "FAKE_CONTAINER_ROOT": str(root),
    }


def _run_agent(aws: AWS, env: dict[str, str], *, on: bool = True) -> None:
    """Apply the agent and create its service as the controller would, then run its task."""
    from oab.controller.adapters.ecs import CallLog
    from oab.controller.core.status import AgentStatus
    from oab.controller.testing import reconcile_request

    assert oabctl("apply", "-f", "-", stdin=exec_manifest(on=on), env=env).code == 0
    aws.client("ssm").put_parameter(
        Name="/oab/team/bot/discord-token", Value="planted-9f8e7d", Type="SecureString"
    )
    reconciler = _reconciler(aws)
    req = reconcile_request("team/bot")
    reconciler.reconcile(req, status=AgentStatus(key="team/bot"), log=CallLog())
    ecs = aws.client("ecs")

    def running() -> bool:
        arns = ecs.list_tasks(cluster="oab", serviceName="oab-team-bot")["taskArns"]
        tasks = ecs.describe_tasks(cluster="oab", tasks=arns)["tasks"] if arns else []
        return any(t["lastStatus"] == "RUNNING" for t in tasks)

    wait_until(running, timeout=30)


def _reconciler(aws: AWS) -> Any:
    from oab.controller.adapters.changes import ChangeLog
    from oab.controller.adapters.clusterprofile import read_cluster_profile
    from oab.controller.adapters.ecs import EcsAdapter
    from oab.controller.adapters.objectstore import S3ObjectStore
    from oab.controller.adapters.ratelimit import RateLimiter
    from oab.controller.adapters.secretversions import SecretVersions
    from oab.controller.adapters.store import DesiredStateStore
    from oab.controller.core.render import RenderContext
    from oab.controller.reconcile.desired import StoreManifests
    from oab.controller.reconcile.reconciler import Reconciler
    from oab.controller.testing import FakeClock

    s3 = aws.client("s3")
    profile = read_cluster_profile(s3, "oab-control-plane")
    assert profile is not None
    limiter = RateLimiter({})
    return Reconciler(
        manifests=StoreManifests(
            DesiredStateStore(
                S3ObjectStore(s3, "oab-control-plane"),
                changes=ChangeLog(aws.client("dynamodb"), aws.tables.state),
            )
        ),
        ecs=EcsAdapter(aws.client("ecs"), cluster="oab", limiter=limiter),
        s3=s3,
        bucket="oab-control-plane",
        secrets=SecretVersions(
            ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"), limiter=limiter
        ),
        context=RenderContext(
            region="us-east-1",
            bucket="oab-control-plane",
            cluster="oab",
            agent_image="ghcr.io/openabdev/oab-controller:0.1.0",
            execution_role_arn="arn:aws:iam::{account}:role/oab-agent-exec-{namespace}-{name}",
            task_role_arn="arn:aws:iam::{account}:role/oab-agent-task-{namespace}-{name}",
            account_id="123456789012",
            default_subnets=profile.subnets,
            default_security_groups=profile.security_groups,
        ),
        wall=FakeClock().time,
    )


def _log(env: dict[str, str]) -> list[dict[str, Any]]:
    path = Path(env["FAKE_PLUGIN_LOG"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -------------------------------------------------------------------------------------- exec
def test_exec_hands_the_session_to_the_plugin_as_the_aws_cli_does(
    aws: AWS, env: dict[str, str]
) -> None:
    _run_agent(aws, env)
    code, out, err = oabctl("exec", "bot", "-n", "team", "--", "echo", "hello world", env=env)
    assert code == 0, err
    assert "hello world" in out
    (call,) = _log(env)
    argv, session = call["argv"], call["session"]
    # The session travels in the environment (plugin > 1.2.497.0), never in the argv.
    assert argv[0] == SESSION_ENV
    assert argv[1:4] == ["us-east-1", "StartSession", ""]
    assert json.loads(argv[4])["Target"].startswith("ecs:oab_")
    assert argv[5] == aws.emulator.endpoint
    info = DataPlaneControl(aws.emulator.endpoint).exec_session(session["sessionId"])
    assert info["command"] == "echo 'hello world'"
    assert info["container"] == "openab"
    # The token and the stream URL never reach oabctl's output.
    for secret in (session["tokenValue"], session["streamUrl"]):
        assert secret not in out
        assert secret not in err


def test_an_old_plugin_gets_the_session_as_its_first_argument(
    aws: AWS, env: dict[str, str]
) -> None:
    _run_agent(aws, env)
    env["FAKE_PLUGIN_VERSION"] = "1.2.497.0"
    code, _, err = oabctl("exec", "bot", "-n", "team", "--", "true", env=env)
    assert code == 0, err
    (call,) = _log(env)
    assert json.loads(call["argv"][0])["sessionId"] == call["session"]["sessionId"]


def test_exec_without_the_plugin_says_how_to_install_it(aws: AWS, env: dict[str, str]) -> None:
    _run_agent(aws, env)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if "bin" not in p[-4:])
    env["PATH"] = str(Path(env["FAKE_CONTAINER_ROOT"]))  # nothing there
    code, _, err = oabctl("exec", "bot", "-n", "team", "--", "true", env=env)
    assert code == 1
    assert "session-manager-plugin not found on PATH" in err
    assert "session-manager-working-with-install-plugin" in err


def test_exec_refused_when_the_agent_has_exec_off(aws: AWS, env: dict[str, str]) -> None:
    _run_agent(aws, env, on=False)
    code, _, err = oabctl("exec", "bot", "-n", "team", "--", "true", env=env)
    assert code == 1
    assert "set spec.exec: true" in err
    assert _log(env) == []


def test_exec_with_no_running_task(aws: AWS, env: dict[str, str]) -> None:
    assert oabctl("apply", "-f", "-", stdin=exec_manifest(), env=env).code == 0
    code, _, err = oabctl("exec", "bot", "-n", "team", "--", "true", env=env)
    assert code == 1
    assert "has no running task" in err


def test_exec_of_an_unknown_agent(aws: AWS, env: dict[str, str]) -> None:
    code, _, err = oabctl("exec", "nobody", "-n", "team", env=env)
    assert code == 1
    assert "nobody" in err


# ---------------------------------------------------------------------------------------- cp
def _tree(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = p.read_bytes()
    return out


def test_cp_round_trips_a_directory_tree(aws: AWS, env: dict[str, str], tmp_path: Path) -> None:
    _run_agent(aws, env)
    src = tmp_path / "local" / "work"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 64 + b"\r\n\x00end")
    (src / "sub" / "deeper" / "c").write_text("")
    (src / "link").symlink_to("sub/b.bin")
    remote = Path(env["FAKE_CONTAINER_ROOT"]) / "home" / "agent"
    code, _, err = oabctl("cp", str(src), f"bot:{remote}", "-n", "team", env=env)
    assert code == 0, err
    assert _tree(remote / "work") == _tree(src)
    back = tmp_path / "back"
    code, _, err = oabctl("cp", f"bot:{remote / 'work'}", str(back), "-n", "team", env=env)
    assert code == 0, err
    assert _tree(back / "work") == _tree(src)
    # A single file too.
    code, _, err = oabctl(
        "cp", f"bot:{remote / 'work' / 'a.txt'}", str(back), "-n", "team", env=env
    )
    assert code == 0, err
    assert (back / "a.txt").read_text() == "alpha\n"


def test_cp_refuses_a_download_with_a_link_out_and_writes_nothing(
    aws: AWS, env: dict[str, str], tmp_path: Path
) -> None:
    _run_agent(aws, env)
    evil = Path(env["FAKE_CONTAINER_ROOT"]) / "evil"
    evil.mkdir()
    (evil / "ok.txt").write_text("fine")
    (evil / "passwd").symlink_to("/etc/passwd")
    dst = tmp_path / "dst"
    code, _, err = oabctl("cp", f"bot:{evil}", str(dst), "-n", "team", env=env)
    assert code == 1
    assert "refused symlink" in err
    assert list(dst.iterdir()) == []


def test_cp_of_a_missing_remote_path(aws: AWS, env: dict[str, str], tmp_path: Path) -> None:
    _run_agent(aws, env)
    gone = Path(env["FAKE_CONTAINER_ROOT"]) / "nope"
    code, _, err = oabctl("cp", f"bot:{gone}", str(tmp_path / "d"), "-n", "team", env=env)
    assert code == 1
    assert "no such file or directory" in err


def test_cp_needs_exactly_one_agent_side(env: dict[str, str], tmp_path: Path) -> None:
    assert oabctl("cp", str(tmp_path), str(tmp_path), env=env).code == 2
    assert oabctl("cp", "bot:/a", "bot:/b", env=env).code == 2
    assert oabctl("cp", "bot:relative", str(tmp_path), env=env).code == 2


# ------------------------------------------------------------------- hostile archives (pure)
def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, b""


def _dev(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info, b""


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([_file("w/ok"), _file("/etc/cron.d/x")], "outside"),
        ([_file("w/ok"), _file("w/../../escape")], "outside"),
        ([_file("other/file")], "outside"),
        ([_link("w/l", "../.."), _file("w/ok")], "leaves"),
        ([_link("w/l", "/etc")], "leaves"),
        ([_link("w/l", "sub"), _file("w/l/x")], "below a symlink"),
        ([_dev("w/tty")], "refused entry"),
    ],
)
def test_hostile_download_is_refused_and_nothing_written(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], why: str
) -> None:
    with pytest.raises(CopyError, match=why):
        extract_archive(_tar(*members), base="w", dst=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_is_never_merged_into(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mine").write_text("keep")
    with pytest.raises(CopyError, match="already exists"):
        extract_archive(_tar(_file("w/theirs")), base="w", dst=tmp_path)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["mine"]


def test_parse_download_reads_between_markers_through_banners_and_crlf() -> None:
    import base64

    tar = _tar(_file("w/a", b"payload"))
    body = base64.encodebytes(tar).decode().replace("\n", "\r\n")
    text = (
        f"\r\nStarting session with SessionId: s\r\nOAB-CP-BEGIN\r\n{body}OAB-CP-END\r\n\r\nExiting"
    )
    assert parse_download(text.encode()) == tar
    with pytest.raises(CopyError, match="damaged"):
        parse_download(b"OAB-CP-BEGIN\r\ntar: w: Cannot open\r\nOAB-CP-END\r\n")
    with pytest.raises(CopyError, match="no archive"):
        parse_download(b"sh: 1: base64: not found\r\n")
