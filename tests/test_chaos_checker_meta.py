"""The chaos checker's self-test is itself proven: switching off any one branch must fail it.

Issue 15 found that disabling 13 of the checker's branches one at a time left its self-test green:
those branches were never exercised by a planted violation. Here every registered branch
(``chaos/invariants.py`` ``BRANCHES``) is switched off in turn, in process, and the self-test
must then report a failure; with nothing switched off it must pass. Also through the runner's
command line, as CI and people run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAOS = ROOT / "chaos"


@pytest.fixture(scope="module")
def chaos_modules() -> tuple[ModuleType, ModuleType]:
    """``selftest`` and ``invariants``, imported the way ``chaos/run.py`` imports them."""
    sys.path.insert(0, str(CHAOS))
    try:
        import invariants
        import selftest
    finally:
        sys.path.remove(str(CHAOS))
    return selftest, invariants


def test_the_self_test_passes_with_every_branch_on(
    chaos_modules: tuple[ModuleType, ModuleType],
) -> None:
    selftest, _ = chaos_modules
    total, failures = selftest.run()
    assert failures == []
    assert total > len(_branches(chaos_modules))  # a case per branch, and the clean history


def _branches(chaos_modules: tuple[ModuleType, ModuleType]) -> tuple[str, ...]:
    branches: tuple[str, ...] = chaos_modules[1].BRANCHES
    return branches


def test_every_branch_is_needed_by_the_self_test(
    chaos_modules: tuple[ModuleType, ModuleType],
) -> None:
    selftest, invariants = chaos_modules
    assert len(invariants.BRANCHES) >= 20
    unproven = [b for b in invariants.BRANCHES if not selftest.run(disabled={b})[1]]
    assert unproven == [], f"the self-test still passes with these branches off: {unproven}"


def test_an_unknown_branch_is_refused(chaos_modules: tuple[ModuleType, ModuleType]) -> None:
    selftest, _ = chaos_modules
    with pytest.raises(ValueError, match="unknown checker branches"):
        selftest.run(disabled={"claims/no-such-branch"})


def test_the_runner_fails_its_self_test_with_a_branch_off() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    run = [sys.executable, str(CHAOS / "run.py"), "--self-test"]
    off = subprocess.run(
        [*run, "--disable", "one-service/foreign-service"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert off.returncode == 1, off.stdout + off.stderr
    assert "a service of no agent: expected one-service/foreign-service" in off.stdout
