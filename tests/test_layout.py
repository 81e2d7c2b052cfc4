"""The repository layout never shadows the standard library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_queue_from_repository_root_is_stdlib() -> None:
    # Printed by the child (run from the root, where a shadowing `queue/` would be found first):
    # where `queue` came from, and the standard library's own folder.
    code = (
        "import queue, sysconfig; import boto3; "
        "print(queue.__file__); print(sysconfig.get_paths()['stdlib'])"
    )
    out, stdlib = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert Path(out) == Path(stdlib) / "queue.py", f"`import queue` resolved to {out}"


def test_packages_import_under_oab_namespace() -> None:
    code = "import oab.controller, oab.leader, oab.queue; print(oab.queue.__path__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert str(ROOT / "queue") in out


def test_top_level_folders_have_no_init() -> None:
    for folder in ("controller", "leader", "queue", "tests", "chaos"):
        assert not (ROOT / folder / "__init__.py").exists(), folder


def test_leader_and_queue_tests_use_only_their_own_packages() -> None:
    # The leader's and the queue's tests (and their subprocess scripts) get their doubles from
    # oab.leader.testing / oab.queue.testing and the emulator from conftest.py's fixture, typed by
    # tests/emulated.py: like the packages they test, they never import oab.controller.
    tests = ROOT / "tests"
    files = [*tests.glob("test_leader_*.py"), *tests.glob("test_queue_*.py")]
    files += [tests / "leader_replica.py", tests / "queue_worker.py"]
    assert len(files) >= 10
    offenders = {}
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            bad = [n for n in names if n == "oab.controller" or n.startswith("oab.controller.")]
            if bad:
                offenders[path.name] = bad
    assert offenders == {}
