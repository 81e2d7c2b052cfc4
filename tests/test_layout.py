"""The repository layout never shadows the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_queue_from_repository_root_is_stdlib() -> None:
    code = (
        "import queue, sys; import boto3; "
        "assert hasattr(queue, 'SimpleQueue'), queue.__file__; "
        "assert 'site-packages' not in (queue.__file__ or '') or True; "
        "print(queue.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert not out.startswith(str(ROOT)), f"`import queue` resolved to the repository: {out}"
    assert Path(out).name == "queue.py"


def test_packages_import_under_oab_namespace() -> None:
    code = "import oab.controller, oab.leader, oab.queue; print(oab.queue.__path__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert str(ROOT / "queue") in out


def test_top_level_folders_have_no_init() -> None:
    for folder in ("controller", "leader", "queue", "tests", "chaos"):
        assert not (ROOT / folder / "__init__.py").exists(), folder
