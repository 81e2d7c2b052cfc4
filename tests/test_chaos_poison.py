"""The ``poison`` chaos scenario, CI-sized: bad data of every kind while the fleet changes.

``chaos/run.py --scenario poison`` against three real replica processes on the emulator, with the
smallest fleet the scenario runs (ten agents: three healthy, seven poisoned, plus two new keys
whose manifests are bad from the start), one iteration. It takes about a minute and a half, most
of it the documented one-minute clamp of a lease item with a huge stored duration, so it lives
here, marked slow, rather than in ``test_chaos_smoke.py`` (whose budget it would double).

Asserted from the runner's report, as CI reads it: the run is ``ok`` (0 violations of every
invariant, the bad-data ones included, and every plant met: an ``invalid`` run fails); each
poisoned agent was parked with its reason and that reason's detail; the replicas counted what
was planted; a leader came back after each planted lease within its documented wait + retry +
call timeout (with the same one-retry slack the checker allows) and never before the wait; the
whole fleet converged after the runbook's repair.

Time: no absolute wall-clock thresholds; lease figures are judged against the configured timing
and ``MAX_LEASE_DURATION_MS``, which the report carries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oab.leader.record import MAX_LEASE_DURATION_MS

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "chaos" / "run.py"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_poison_scenario_parks_every_bad_item_and_stops_nothing(tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--scenario",
            "poison",
            "--iterations",
            "1",
            "--seed",
            "3",
            "--replicas",
            "3",
            "--agents",
            "3",  # raised to the scenario's minimum (10)
            "--report",
            str(report_dir),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=580,
        env=env,
        cwd=ROOT,
    )
    report = json.loads((report_dir / "report.json").read_text())
    entry = report["scenarios"]["poison"]
    run = entry["runs_detail"][0]
    assert proc.returncode == 0, (proc.stderr[-3000:], entry["violation_details"], entry["invalid"])
    assert report["violations"] == 0
    assert report["invalid_runs"] == 0
    assert entry["statuses"] == ["ok"], (entry["errors"], entry["invalid"])
    assert run["agents"] == 10
    figures = run["figures"]
    assert figures["planted"] == 13
    assert figures["parked"] == 8  # four unreadable items, one refused commit, four manifests
    assert all(v == 1.0 for k, v in figures.items() if k.startswith("met_"))
    assert figures["poison_items_queue_row"] >= 2
    for kind in ("state_status", "state_commit", "state_change", "bucket_key"):
        assert figures[f"poison_items_{kind}"] >= 1, kind
    t = report["timing"]
    retry, call = t["retry_period_s"], t["call_timeout_s"]
    garbage = figures["leader_after_lease_garbage_s"]
    assert t["lease_duration_s"] <= garbage <= t["lease_duration_s"] + retry + call + retry
    clamp = MAX_LEASE_DURATION_MS / 1000
    assert clamp <= figures["leader_after_lease_huge_s"] <= clamp + retry + call + retry
    assert figures["converged_after_repair_s"] > 0
    assert figures["audit_calls_max_bytes"] <= figures["audit_calls_budget_bytes"]
    parked = {f["role"]: f["last_error"] for f in run["faults"] if f["what"] == "parked"}
    assert parked["queue-row"].startswith("CorruptRow: ")
    assert parked["status"].startswith("CorruptStatus: ")
    assert parked["commit"].startswith("CommitRejected: ")
    assert "not this key's" in parked["identity"]
    md = (report_dir / "report.md").read_text()
    assert "Violations: 0" in md
    assert "| poison | 1 | 0 |" in md
