"""CI smoke subset of the chaos suite (``chaos/run.py``), run as a subprocess.

The full suite is ``python chaos/run.py --scenario all --iterations N``; here: the checker's
self-test (planted bad evidence must be caught), then three failover scenarios once each against
three real replica processes, asserting zero violations and a well-formed report.
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
    assert set(report["scenarios"]) == set(SMOKE)
    bound = report["timing"]["crash_failover_bound_s"]
    assert bound == pytest.approx(8.0)
    for name, entry in report["scenarios"].items():
        assert entry["runs"] == 1, name
        assert entry["violations"] == 0, (name, entry["violation_details"])
        assert entry["errors"] == [], (name, entry["errors"])
        assert entry["failover_s"]["n"] >= 1, name
        assert entry["failover_s"]["max"] <= bound + report["timing"]["retry_period_s"], name
        assert entry["recovery_s"]["n"] >= 1, name
    zombie = report["scenarios"]["zombie-leader"]["runs_detail"][0]["figures"]
    assert zombie["zombie_writes_accepted"] == 0
    md = (report_dir / "report.md").read_text()
    assert "Violations: 0" in md
    for name in SMOKE:
        assert f"| {name} | 1 | 0 |" in md
