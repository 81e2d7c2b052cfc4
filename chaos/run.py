"""``python chaos/run.py``: run chaos scenarios against N real replicas and check the invariants.

Usage::

    python chaos/run.py --scenario NAME|all --iterations N --seed S --replicas R --report DIR

Writes ``DIR/report.json`` (top-level ``violations``: the total, an integer; ``scenarios``: one
entry per scenario with its runs, violations, failover / leaderless / recovery figures and the
documented bound) and ``DIR/report.md``; each run's artifacts (replica logs, proxy events) stay in
``DIR/runs/<scenario>-<iteration>/``. Each run has a status: ``violated``, ``error``, ``invalid``
(the scenario tests a guard, e.g. the fence against a zombie leader, and the guard was never
exercised: no zombie write attempted, none rejected) or ``ok``. Exits 1 unless every run is
``ok``.

The modules beside this file (``harness``, ``faultproxy``, ``invariants``, ``scenarios``) are
imported by plain name: Python puts this script's folder first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import Timing
from scenarios import SCENARIOS, RunResult, run_scenario


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _stats(values: Sequence[float]) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values) if values else None),
    }


def summarize(name: str, runs: list[RunResult], timing: Timing) -> dict[str, Any]:
    """The report entry of one scenario."""
    failover = [x for r in runs for x in r.failover_s]
    leaderless = [x for r in runs for x in r.leaderless_s]
    recovery = [x for r in runs for x in r.recovery_s]
    violations = [v.to_json() | {"iteration": r.iteration} for r in runs for v in r.violations]
    errors = [f"iteration {r.iteration}: {r.error}" for r in runs if r.error]
    invalid = [
        f"iteration {r.iteration}: guard not exercised ({', '.join(r.unexercised)} = 0)"
        for r in runs
        if r.status == "invalid"
    ]
    bound = timing.crash_failover_bound_s
    return {
        "runs": len(runs),
        "violations": len(violations),
        "violation_details": violations[:50],
        "errors": errors,
        "invalid": invalid,
        "statuses": [r.status for r in runs],
        "failover_s": _stats(failover),
        "failover_bound_s": bound,
        "failover_within_bound": all(x <= bound + timing.retry_period_s for x in failover),
        "leaderless_s": _stats(leaderless),
        "recovery_s": _stats(recovery),
        "runs_detail": [r.to_json() for r in runs],
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """``report.md``: one table row per scenario, then violations and errors."""
    t = report["timing"]
    lines = [
        "# Chaos report",
        "",
        f"Replicas: {report['replicas']}, seed {report['seed']}, "
        f"iterations {report['iterations']}; lease {t['lease_duration_s']} s, "
        f"renew deadline {t['renew_deadline_s']} s, retry {t['retry_period_s']} s, "
        f"claim visibility {t['claim_visibility_s']} s. Documented crash failover bound "
        f"(lease + retry + call timeout): **{t['crash_failover_bound_s']} s**.",
        "",
        f"**Violations: {report['violations']}**; invalid runs (guard not exercised): "
        f"{report['invalid_runs']}",
        "",
        "| scenario | runs | violations | failover p50 / p99 / max (s) | leaderless p50 / max (s) "
        "| recovery p50 / p99 / max (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in report["scenarios"].items():
        f, lz, rc = s["failover_s"], s["leaderless_s"], s["recovery_s"]
        lines.append(
            f"| {name} | {s['runs']} | {s['violations']} | "
            f"{_fmt(f['p50'])} / {_fmt(f['p99'])} / {_fmt(f['max'])} | "
            f"{_fmt(lz['p50'])} / {_fmt(lz['max'])} | "
            f"{_fmt(rc['p50'])} / {_fmt(rc['p99'])} / {_fmt(rc['max'])} |"
        )
    for name, s in report["scenarios"].items():
        if s["violation_details"] or s["errors"] or s["invalid"]:
            lines += ["", f"## {name}", ""]
            lines += [
                f"- violation `{v['invariant']}` ({v.get('branch', '')}): {v['detail']}"
                for v in s["violation_details"]
            ]
            lines += [f"- error: {e}" for e in s["errors"]]
            lines += [f"- invalid: {e}" for e in s["invalid"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--scenario", default="all", help=f"one of {', '.join(SCENARIOS)}, or all")
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--agents", type=int, default=6, help="agents per run (default 6)")
    p.add_argument("--mass-agents", type=int, default=1000, help="agents of mass-change")
    p.add_argument("--report", default="build/chaos")
    p.add_argument("--lease-duration", type=float, default=6.0)
    p.add_argument("--renew-deadline", type=float, default=4.0)
    p.add_argument("--retry-period", type=float, default=1.0)
    p.add_argument("--claim-visibility", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--self-test", action="store_true", help="check the checker on planted bad evidence"
    )
    p.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="BRANCH",
        help="with --self-test: switch a checker branch off (it must then fail)",
    )
    args = p.parse_args(argv)
    if args.self_test:
        import selftest

        return selftest.main(disabled=args.disable)
    names = list(SCENARIOS) if args.scenario == "all" else args.scenario.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or args.replicas < 2 or args.iterations < 1:
        p.error(
            f"unknown scenario {unknown}" if unknown else "need --replicas >= 2, --iterations >= 1"
        )
    timing = Timing(
        lease_duration_s=args.lease_duration,
        renew_deadline_s=args.renew_deadline,
        retry_period_s=args.retry_period,
        claim_visibility_s=args.claim_visibility,
        workers=args.workers,
    )
    out = Path(args.report)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "violations": 0,
        "invalid_runs": 0,
        "scenarios": {},
        "seed": args.seed,
        "iterations": args.iterations,
        "replicas": args.replicas,
        "timing": {
            "lease_duration_s": timing.lease_duration_s,
            "renew_deadline_s": timing.renew_deadline_s,
            "retry_period_s": timing.retry_period_s,
            "call_timeout_s": timing.call_timeout_s,
            "claim_visibility_s": timing.claim_visibility_s,
            "crash_failover_bound_s": timing.crash_failover_bound_s,
        },
    }
    failed = False
    started = time.monotonic()
    for name in names:
        runs: list[RunResult] = []
        for it in range(args.iterations):
            workdir = out / "runs" / f"{name}-{it}"
            sys.stderr.write(f"chaos: {name} #{it} ...\n")
            res = run_scenario(
                name,
                iteration=it,
                seed=args.seed,
                workdir=workdir,
                replicas=args.replicas,
                agents=args.agents,
                mass_agents=args.mass_agents,
                timing=timing,
            )
            sys.stderr.write(
                f"chaos: {name} #{it}: {len(res.violations)} violations, "
                f"failover {[round(x, 2) for x in res.failover_s]}, "
                f"recovery {[round(x, 2) for x in res.recovery_s]}, {res.duration_s:.0f} s, "
                f"{res.status}{', error: ' + res.error if res.error else ''}\n"
            )
            failed = failed or res.status != "ok"
            runs.append(res)
        entry = summarize(name, runs, timing)
        report["scenarios"][name] = entry
        report["violations"] += entry["violations"]
        report["invalid_runs"] += len(entry["invalid"])
        report["duration_s"] = round(time.monotonic() - started, 1)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        (out / "report.md").write_text(markdown(report))
    return 1 if report["violations"] or failed else 0


if __name__ == "__main__":
    sys.exit(main())
