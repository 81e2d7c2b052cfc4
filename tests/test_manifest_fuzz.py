"""Two cases of every shape of the manifest fuzz (``make fuzz`` runs 10,000), as a subprocess.

The runner (``fuzz/manifest_fuzz.py``) starts its own emulator and ends with one JSON line; the
test asserts what the issue asks of every hostile input: no traceback (exit 70 or an exception),
no write on any rejection, peak RSS under 200 MB for any input under 1 MB, and no other finding.
The corpus is checked to be deterministic and to cover every shape.

54 cases in ``--quick`` mode (no diff, render or get) take ~40 s on a loaded 2-core machine: each
case runs two in-process ``oabctl apply`` commands and reads its bytes back from the emulator,
and the alias bombs and node floods are composed up to the 100,000-node cap each time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "fuzz" / "manifest_fuzz.py"
CASES = 54


def _corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "manifest_corpus", ROOT / "fuzz" / "manifest_corpus.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_corpus_is_deterministic_and_covers_every_shape() -> None:
    corpus = _corpus()
    first = [(c.shape, c.data) for c in corpus.cases(seed=7, count=2 * len(corpus.shapes()))]
    again = [(c.shape, c.data) for c in corpus.cases(seed=7, count=2 * len(corpus.shapes()))]
    assert first == again
    assert {shape for shape, _ in first} == set(corpus.shapes())
    assert corpus.case(7, 5).data == first[5][1]  # a case regenerates alone
    assert [c.data for c in corpus.cases(seed=8, count=10)] != [d for _, d in first[:10]]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_few_hundred_hostile_manifests_pass_every_check() -> None:
    # The runner starts its own emulator; a fixture's endpoint must not leak into it.
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--count", str(CASES), "--seed", "11", "--quick"],
        check=False,
        capture_output=True,
        text=True,
        timeout=850,
        env=env,
        cwd=ROOT,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["inputs"] == CASES
    assert summary["tracebacks"] == 0, proc.stdout
    assert summary["writes_on_rejection"] == 0, proc.stdout
    assert summary["max_rss_mb_under_1mb"] < 200, proc.stdout
    assert summary["findings"] == 0, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary["accepted"] > 0  # the valid cases went all the way through
    for reason in ("nodes cap", "recursive alias", "control character", "encoding"):
        assert summary["rejected_by_reason"].get(reason, 0) > 0, reason
