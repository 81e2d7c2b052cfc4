"""The CI subset of mutation testing: a fixed list of guard mutants that must all be killed.

The full run (``make mutate``, cosmic-ray, ``mutation/``) is too slow for CI on 2 cores. Here each
listed one-line mutation of a safety guard is applied to a temporary copy of the packages, the few
fast tests that must kill it run in a subprocess against that copy, and they must *fail* (pytest
exit 1: a test failed, not a collection error). The list holds every guard of issue 15's table:
the ones that survived then (now killed by ``tests/test_guards_*.py``) and the ones already killed
(kept killed). A guard line that no longer exists fails the test with the line to update: the
list is reviewed code, like the guards.

The two leader guards are killed by the leader's own tests, owned and being written separately
(issue 15, "p-lease"): they are marked ``xfail(strict=True)`` until those tests land, so the
moment a test kills them this file fails with XPASS and the mark must be removed.

Time model: none; each subprocess is bounded by ``timeout``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("controller", "leader", "queue")


@dataclass(frozen=True, kw_only=True)
class Mutant:
    """One guard mutation: ``original`` (exactly once in ``path``) becomes ``mutated``."""

    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]


G_STATUS = "tests/test_guards_status.py"
G_RECONCILE = "tests/test_guards_reconcile.py"
MUTANTS = (
    Mutant(
        name="status-audit-seq-ordering",
        path="controller/adapters/state.py",
        original='        cond = "audit_seq = :prev"',
        mutated='        cond = "audit_seq >= :prev"',
        tests=(
            f"{G_STATUS}::test_a_stale_status_write_is_refused_when_its_audit_row_does_not_collide",
        ),
    ),
    Mutant(
        name="status-audit-seq-first-write",
        path="controller/adapters/state.py",
        original='        cond = "attribute_not_exists(pk) OR audit_seq = :prev"',
        mutated='        cond = "attribute_not_exists(pk) OR audit_seq >= :prev"',
        tests=(
            f"{G_STATUS}::test_a_stale_status_write_is_refused_when_its_audit_row_does_not_collide",
        ),
    ),
    Mutant(
        name="phase-failed-to-terminating",
        path="controller/core/status.py",
        original=(
            '    "Failed": frozenset({"Pending", "Running", "Suspended", "Failed", "Terminating"}),'
        ),
        mutated='    "Failed": frozenset({"Pending", "Running", "Suspended", "Failed"}),',
        tests=(f"{G_STATUS}::test_phase_machine_is_the_documented_table",),
    ),
    Mutant(
        name="ecs-claim-guard",
        path="controller/adapters/ecs.py",
        original="        if guard is not None and not guard():",
        mutated="        if False:",
        tests=(f"{G_RECONCILE}::test_a_claim_expiring_mid_reconcile_makes_no_ecs_call_after_it",),
    ),
    Mutant(
        name="create-service-client-token",
        path="controller/reconcile/reconciler.py",
        original="client_token=client_token(run.token)",
        mutated="client_token=client_token(run.run_id)",
        tests=(f"{G_RECONCILE}::test_create_service_carries_the_units_token",),
    ),
    Mutant(
        name="task-definition-reuse-by-hash",
        path="controller/reconcile/reconciler.py",
        original=(
            "            if latest is not None and latest[1].get(CONTENT_HASH_TAG) == content_hash:"
        ),
        mutated="            if latest is not None:",
        tests=(f"{G_RECONCILE}::test_only_a_revision_with_the_same_hash_tag_is_reused",),
    ),
    Mutant(
        name="outcome-local-claim-loss-drops",
        path="controller/core/outcome.py",
        original="_VOID = (ClaimInDoubt, ClaimLost, ExtraConditionFailed)",
        mutated="_VOID = (ClaimLost, ExtraConditionFailed)",
        tests=("tests/test_reconcile.py::test_decide_maps_every_outcome",),
    ),
    Mutant(
        name="queue-claim-token",
        path="queue/row.py",
        original=" or row.claim_token != claim_token:",
        mutated=":",
        tests=(
            "tests/test_queue_workqueue.py"
            "::test_expired_claim_is_taken_over_and_the_stale_worker_is_rejected",
        ),
    ),
    Mutant(
        name="queue-takeover-observation",
        path="queue/workqueue.py",
        original="            return mono - seen[1] >= self.config.visibility_timeout",
        mutated="            return True",
        tests=(
            "tests/test_queue_workqueue.py"
            "::test_a_crashed_claim_is_taken_over_after_a_visibility_timeout_of_silence",
        ),
    ),
    Mutant(
        name="queue-version-compare-and-swap",
        path="queue/store.py",
        original='        "ConditionExpression": "#v = :v",',
        mutated='        "ConditionExpression": "attribute_exists(#v)",',
        tests=(
            "tests/test_queue_dynamo.py"
            "::test_expired_claim_is_found_through_the_index_and_the_stale_completion_refused",
        ),
    ),
    Mutant(
        name="scheduler-fence",
        path="controller/runtime/scheduler.py",
        original="                    extra_condition=fence.condition_check(),\n",
        mutated="                    extra_condition=None,\n",
        tests=("tests/test_scheduler.py::test_a_rejected_fence_stops_the_scheduler",),
    ),
    Mutant(
        name="fence-epoch-clause",
        path="leader/fence.py",
        original='"#holder = :holder AND #epoch = :epoch"',
        # Every name and value still used (a request DynamoDB accepts); the epoch test is void.
        mutated='"#holder = :holder AND (#epoch = :epoch OR #epoch <> :epoch)"',
        tests=("tests/test_leader_dynamo.py",),
    ),
    Mutant(
        name="lease-acquire-stale-revision",
        path="leader/lease.py",
        original='            clauses = ["#rev = :rev"]',
        mutated='            clauses = ["(#rev = :rev OR #rev <> :rev)"]',
        tests=("tests/test_leader_dynamo.py",),
    ),
)

#: Guards whose killing tests are being written by another change (see the module docstring).
PENDING: dict[str, str] = {}


class MutantSurvived(AssertionError):
    """The tests that must kill a mutant passed with it applied."""


def _copy(dest: Path) -> Path:
    """A copy of the packages and tests, importable as ``oab.*`` through ``.pp`` links."""
    for folder in (*PACKAGES, "tests"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    links = dest / ".pp" / "oab"
    links.mkdir(parents=True)
    for pkg in PACKAGES:
        (links / pkg).symlink_to(dest / pkg, target_is_directory=True)
    return dest


def _run(mutant: Mutant, tree: Path) -> subprocess.CompletedProcess[str]:
    """Apply ``mutant`` to its own copy ``tree`` and run its tests there."""
    target = tree / mutant.path
    source = target.read_text()
    assert source.count(mutant.original) == 1, f"{mutant.path}: update the {mutant.name} entry"
    target.write_text(source.replace(mutant.original, mutant.mutated))
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    env["PYTHONPATH"] = str(tree / ".pp")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Every mutant's test run, a few at a time (each in its own copy: they run concurrently).

    Each subprocess mostly waits on its own emulator and interpreter start, so running three at
    once roughly halves the wall time even on 2 cores.
    """
    base = tmp_path_factory.mktemp("mutants")
    trees = {m.name: _copy(base / m.name) for m in MUTANTS}
    out: dict[str, object] = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {m.name: pool.submit(_run, m, trees[m.name]) for m in MUTANTS}
        for name, future in futures.items():
            try:
                out[name] = future.result()
            except Exception as exc:  # reported by that mutant's own test
                out[name] = exc
    return out


def _param(m: Mutant) -> object:
    marks = []
    if m.name in PENDING:
        marks.append(pytest.mark.xfail(strict=True, raises=MutantSurvived, reason=PENDING[m.name]))
    return pytest.param(m, id=m.name, marks=marks)


def test_every_listed_guard_line_is_unique_in_its_file() -> None:
    for m in MUTANTS:
        found = (ROOT / m.path).read_text().count(m.original)
        assert found == 1, f"{m.name}: {m.path} holds {m.original!r} {found} times; update MUTANTS"


@pytest.mark.parametrize("mutant", [_param(m) for m in MUTANTS])
def test_guard_mutant_is_killed(outcomes: dict[str, object], mutant: Mutant) -> None:
    proc = outcomes[mutant.name]
    if isinstance(proc, Exception):
        raise proc
    assert isinstance(proc, subprocess.CompletedProcess)
    if proc.returncode == 0:
        raise MutantSurvived(f"{mutant.name} survived {mutant.tests}:\n{proc.stdout[-2000:]}")
    # 1: a test failed. Anything else (2: collection error, 4: usage) kills nothing real.
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
