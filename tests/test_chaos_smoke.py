"""CI smoke subset of the chaos suite (``chaos/run.py``), run as a subprocess.

The full suite is ``python chaos/run.py --scenario all --iterations N``; here: the checker's
self-test (planted bad evidence must be caught), then three failover scenarios once each against
three real replica processes, asserting zero violations, that every run exercised the guard it
tests (an ``invalid`` run fails), and a well-formed report.

Time: failover is judged against the configured lease, not an absolute number of seconds on a
loaded machine: never before ``lease - renew deadline`` (a standby must not take a lease that may
still be live), and within two leases (it took over at the first expiry it could see).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "chaos" / "run.py"
SMOKE = ("leader-killed", "zombie-leader", "dynamodb-cut")


def _env() -> dict[str, str]:
    # The runner starts its own emulator; a fixture's AWS_ENDPOINT_URL must not leak into it.
    return {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}


def test_checker_catches_planted_violations() -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--self-test"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checks passed" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_smoke_scenarios_have_no_violations(tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--scenario",
            ",".join(SMOKE),
            "--iterations",
            "1",
            "--seed",
            "7",
            "--replicas",
            "3",
            "--agents",
            "3",
            "--report",
            str(report_dir),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=400,
        env=_env(),
        cwd=ROOT,
    )
    report = json.loads((report_dir / "report.json").read_text())
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert report["violations"] == 0
    assert isinstance(report["violations"], int)
    assert report["invalid_runs"] == 0
    assert set(report["scenarios"]) == set(SMOKE)
    timing = report["timing"]
    assert timing["crash_failover_bound_s"] == pytest.approx(8.0)
    earliest = timing["lease_duration_s"] - timing["renew_deadline_s"]
    latest = 2 * timing["lease_duration_s"]
    for name, entry in report["scenarios"].items():
        assert entry["runs"] == 1, name
        assert entry["statuses"] == ["ok"], (name, entry["invalid"], entry["errors"])
        assert entry["violations"] == 0, (name, entry["violation_details"])
        assert entry["errors"] == [], (name, entry["errors"])
        failover = entry["failover_s"]
        assert failover["n"] >= 1, name
        assert earliest <= failover["p50"] <= failover["max"] <= latest, (name, failover)
        assert entry["recovery_s"]["n"] >= 1, name
    zombie = report["scenarios"]["zombie-leader"]["runs_detail"][0]["figures"]
    assert zombie["zombie_writes_attempted"] >= 1  # the fence was tested, not merely unneeded
    assert zombie["fence_rejections"] >= 1
    assert zombie["zombie_writes_accepted"] == 0
    md = (report_dir / "report.md").read_text()
    assert "Violations: 0" in md
    for name in SMOKE:
        assert f"| {name} | 1 | 0 |" in md


def test_a_run_whose_guard_was_not_exercised_is_invalid_and_fails_the_runner() -> None:
    """``invalid`` is its own status (not green), and the runner counts it as a failure."""
    sys.path.insert(0, str(ROOT / "chaos"))
    try:
        from harness import Timing
        from run import summarize
        from scenarios import RunResult
    finally:
        sys.path.remove(str(ROOT / "chaos"))

    required = ("zombie_writes_attempted", "fence_rejections")
    idle = RunResult("zombie-leader", 0, 7, 3, required=required)
    idle.figures.update(zombie_writes_attempted=0.0, zombie_writes_accepted=0.0)
    assert (idle.status, idle.unexercised) == ("invalid", list(required))
    tested = RunResult("zombie-leader", 1, 7, 3, required=required)
    tested.figures.update(zombie_writes_attempted=2.0, fence_rejections=2.0)
    assert tested.status == "ok"
    entry = summarize("zombie-leader", [idle, tested], Timing())
    assert entry["statuses"] == ["invalid", "ok"]
    assert entry["invalid"] == [
        "iteration 0: guard not exercised (zombie_writes_attempted, fence_rejections = 0)"
    ]
