"""``oab-controller``: settings validation and the health check contract."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oab.controller.cli import main as cli
from oab.controller.local.cluster import ClusterConfig, LocalCluster
from oab.controller.runtime import daemon
from oab.controller.runtime.settings import DaemonSettingsError, load_daemon_settings
from oab.controller.testing import AWS, process_exited, spawn_parent, wait_until


def test_settings_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('workers = 3\nresync_period_s = 60.0\nbucket = "from-file"\n')
    env = {"OAB_WORKERS": "5", "OAB_BUCKET": "from-env"}
    s = load_daemon_settings({"workers": 7}, env=env, path=str(cfg))
    assert s.workers == 7
    assert s.bucket == "from-env"
    assert s.resync_period_s == 60.0


def test_invalid_settings_name_field_and_source(tmp_path: Path) -> None:
    with pytest.raises(DaemonSettingsError, match=r"workers \(environment\)"):
        load_daemon_settings({}, env={"OAB_WORKERS": "0"})
    with pytest.raises(DaemonSettingsError, match="lease_duration_s > renew_deadline_s"):
        load_daemon_settings({"lease_duration_s": 2.0, "renew_deadline_s": 3.0}, env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    with pytest.raises(DaemonSettingsError, match="no_such_setting"):
        load_daemon_settings({}, env={}, path=str(bad))


def test_chaos_clock_settings_need_the_chaos_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OAB_CHAOS", raising=False)
    with pytest.raises(DaemonSettingsError, match="OAB_CHAOS=1"):
        load_daemon_settings({"chaos_clock_offset_s": 600.0}, env={})
    monkeypatch.setenv("OAB_CHAOS", "1")
    assert load_daemon_settings({"chaos_clock_rate": 2.0}, env={}).chaos_clock_rate == 2.0


def test_replica_id_defaults_to_unique_hostname_suffix() -> None:
    a = load_daemon_settings({}, env={}).replica_id
    b = load_daemon_settings({}, env={}).replica_id
    assert a != b


def test_healthcheck_reads_freshness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    beat = tmp_path / "health"
    monkeypatch.setenv("OAB_HEALTH_FILE", str(beat))
    assert daemon.healthcheck() == 1  # never written
    beat.write_text(f"{time.time():.3f}\n")
    assert daemon.healthcheck() == 0
    beat.write_text(f"{time.time() - 60:.3f}\n")
    assert daemon.healthcheck() == 1


def test_cli_exit_codes() -> None:
    env = {**os.environ, "OAB_WORKERS": "0"}
    bad = subprocess.run(
        [sys.executable, "-m", "oab.controller.runtime.daemon", "settings"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "workers" in bad.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "oab.controller.runtime.daemon"], capture_output=True, check=False
    )
    assert usage.returncode == 2


@pytest.mark.slow
def test_sigterm_hands_the_lease_over_and_exits_zero(aws: AWS, tmp_path: Path) -> None:
    """Two real replicas: SIGTERM to the leader exits 0 and the standby leads in a new epoch.

    The standby must take the *released* lease, not wait for it to expire. A long lease makes the
    two paths far apart without timing the machine: a standby may take an unreleased lease only
    after seeing it unchanged for a whole lease on its own clock, and the leader renewed it at
    most one retry period before the SIGTERM, so a handoff shorter than lease - retry can only be
    the release. A slow, loaded machine stretches the handoff, but not towards 19 s.
    """
    code = cli.main(["init"], stdout=io.StringIO(), stderr=io.StringIO(), env=aws.emulator.env())
    assert code == 0
    config = ClusterConfig(
        replicas=2, lease_duration_s=20.0, renew_deadline_s=10.0, retry_period_s=0.5
    )
    with LocalCluster(aws.emulator.endpoint, log_dir=tmp_path, config=config) as cluster:
        cluster.start()
        first = cluster.wait_for_leader(timeout=30)
        started = time.monotonic()
        assert cluster.stop(first.holder, timeout=30) == 0
        second = cluster.wait_for_leader(
            timeout=config.lease_duration_s + 30, not_holder=first.holder
        )
        handoff = time.monotonic() - started
        assert second.epoch > first.epoch
        assert handoff < config.lease_duration_s - config.retry_period_s, handoff
        log = next(text for name, text in cluster.logs().items() if first.holder in name)
        assert '"msg": "released the lease"' in log
        assert '"msg": "stopped"' in log


@pytest.mark.slow
def test_a_local_replica_never_outlives_its_killed_harness(aws: AWS, tmp_path: Path) -> None:
    """LocalCluster sets OAB_EXIT_WITH_PARENT: SIGKILL the harness, the replica shuts down."""
    code = cli.main(["init"], stdout=io.StringIO(), stderr=io.StringIO(), env=aws.emulator.env())
    assert code == 0
    harness, replica = spawn_parent(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from oab.controller.local.cluster import ClusterConfig, LocalCluster\n"
        f"c = LocalCluster({aws.emulator.endpoint!r}, log_dir=Path({str(tmp_path)!r}),"
        " config=ClusterConfig(replicas=1))\n"
        "(r,) = c.start()\n"
        "print(r.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    wait_until(
        lambda: '"msg": "replica started"' in (tmp_path / "replica-1.log").read_text(),
        timeout=30,
        message="replica started",
    )
    harness.send_signal(signal.SIGKILL)  # no clean-up code runs in the harness
    harness.wait()
    wait_until(
        lambda: process_exited(replica),
        timeout=40,
        message="replica exits after its harness died",
    )
    log = (tmp_path / "replica-1.log").read_text()
    assert "the process that started this replica is gone" in log
    assert '"msg": "stopped"' in log
