"""oabctl and OpenAB compatibility: unknown config keys warn (``--strict`` refuses), ``version``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from oab.controller.base.names import MANIFEST_PREFIX
from oab.controller.testing import AWS, oabctl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUCKET = "oab-control-plane"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OABCTL_CONFIG": str(tmp_path / "no-config"),
        "AWS_ENDPOINT_URL": os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    }


def _write(tmp_path: Path, doc: dict[str, Any], name: str = "m.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def _kiro_with_unknown_keys() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "kiro-discord.yaml").read_text())
    doc["spec"]["config"]["discord"]["new_upstream_option"] = True
    doc["spec"]["config"]["pool"] = {"max_sesions": 3}
    return doc


def test_render_warns_and_passes_unknown_keys_through(tmp_path: Path, env: dict[str, str]) -> None:
    path = _write(tmp_path, _kiro_with_unknown_keys())
    result = oabctl("render", "-f", path, "-o", "json", env=env)
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 2
    assert "spec.config.discord.new_upstream_option: unknown key" in warnings[0]
    assert "spec.config.pool.max_sesions" in warnings[1]
    assert "did you mean max_sessions?" in warnings[1]
    assert "new_upstream_option = true" in result.out
    assert "max_sesions = 3" in result.out


def test_strict_refuses_warnings(tmp_path: Path, env: dict[str, str]) -> None:
    path = _write(tmp_path, _kiro_with_unknown_keys())
    result = oabctl("render", "-f", path, "--strict", env=env)
    assert result.code == 1
    assert result.out == ""
    assert "spec.config.discord.new_upstream_option: unknown key" in result.err
    assert "(--strict)" in result.err


def test_fleet_defaults_warn_once_at_their_own_path(tmp_path: Path, env: dict[str, str]) -> None:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "fleet.yaml").read_text())
    doc["spec"]["defaults"]["config"]["reactions"] = {"enabld": True}
    result = oabctl("render", "-f", _write(tmp_path, doc), "-o", "json", env=env)
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1
    assert "spec.defaults.config.reactions.enabld" in warnings[0]
    assert "did you mean enabled?" in warnings[0]


def test_apply_strict_writes_nothing(aws: AWS, tmp_path: Path) -> None:
    env = {**os.environ, "OABCTL_CONFIG": str(tmp_path / "no-config")}
    assert oabctl("init", env=env).code == 0
    path = _write(tmp_path, _kiro_with_unknown_keys())
    refused = oabctl("apply", "-f", path, "--strict", env=env)
    assert refused.code == 1
    assert "new_upstream_option" in refused.err
    s3 = aws.client("s3")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=MANIFEST_PREFIX)["KeyCount"] == 0
    applied = oabctl("apply", "-f", path, env=env)
    assert applied.code == 0, applied.err
    assert "Warning: " in applied.err
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=MANIFEST_PREFIX)["KeyCount"] == 1


def test_version_names_the_openab_release(env: dict[str, str]) -> None:
    result = oabctl("version", env=env)
    assert result.code == 0
    assert "OpenAB 0.10.0" in result.out
    assert "config.rs @1f3daf2" in result.out
