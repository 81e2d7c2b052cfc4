"""``oabctl`` on hostile manifests and hostile stored objects, against the emulator.

Every hostile input exits 1 with ``file:line`` and a fix, never 70, and writes nothing (the
bucket's versions and the state table are compared before and after). An object planted
straight into the bucket is named by every command that reads it, never hides the others from
``get -A``, and is replaced by ``apply``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from oab.controller.testing import AWS, agent_manifest, oabctl

BUCKET = "oab-control-plane"
KEY = "manifests/team/bot.yaml"
GOOD = agent_manifest("bot", namespace="team")

HOSTILE: dict[str, str | bytes] = {
    "alias bomb": GOOD
    + textwrap.dedent(
        """\
          platform:
            k8s:
              a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
              b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
              c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
              d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
              e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
              f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
              g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
        """
    ),
    "recursive alias": GOOD + "  platform: {k8s: &a {x: *a}}\n",
    "deep nesting": GOOD + "  platform: {k8s: " + "[" * 500 + "]" * 500 + "}\n",
    "raw NUL": GOOD.replace("cpu: 256", "cpu: 2\x0056"),
    "escaped escape char": GOOD + '  env: {A: "\\e[2J"}\n',
    "surrogate escape": GOOD + '  env: {A: "\\ud800"}\n',
    "huge integer": GOOD + "  platform: {k8s: {n: " + "9" * 5_000 + "}}\n",
    "bad hex integer": GOOD + "  platform: {k8s: {n: 0x_}}\n",
    "python tag": GOOD + "  platform: {k8s: !!python/object/apply:os.system [true]}\n",
    "binary tag": GOOD + "  platform: {k8s: !!binary aGk=}\n",
    "integer key": GOOD + "  platform: {k8s: {1: one}}\n",
    "bad UTF-8": GOOD.encode() + b"  env: {A: \xc3\x28}\n",
    "UTF-32": GOOD.encode("utf-32"),
}


@pytest.fixture
def env(aws: AWS, tmp_path: Path) -> dict[str, str]:
    ready = {**os.environ, "OABCTL_CONFIG": str(tmp_path / "no-config")}
    assert oabctl("init", env=ready).code == 0
    return ready


def snapshot(aws: AWS) -> tuple[Any, ...]:
    """Every object version of the bucket and every item of the state table."""
    versions = aws.client("s3").list_object_versions(Bucket=BUCKET)
    items = aws.client("dynamodb").scan(TableName=aws.tables.state)["Items"]
    return (
        sorted((v["Key"], v["VersionId"]) for v in versions.get("Versions", [])),
        sorted(str(sorted(i.items())) for i in items),
    )


def test_every_hostile_manifest_exits_1_with_its_line_and_writes_nothing(
    aws: AWS, env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "hostile.yaml"
    # A valid agent first: all or nothing means it is not written either.
    first = agent_manifest("first", namespace="team").encode() + b"---\n"
    before = snapshot(aws)
    for name, body in HOSTILE.items():
        path.write_bytes(first + (body.encode() if isinstance(body, str) else body))
        for dry_run in ([], ["--dry-run"]):
            result = oabctl("apply", *dry_run, "-f", str(path), env=env)
            assert (result.code, result.out) == (1, ""), (name, result.err)
            (line,) = result.err.splitlines()
            assert line.startswith(f"error: {path}:"), (name, line)
            assert "internal error" not in result.err
        assert snapshot(aws) == before, name


def test_a_hostile_stdin_is_refused_like_a_file(aws: AWS, env: dict[str, str]) -> None:
    before = snapshot(aws)
    result = oabctl("apply", "-f", "-", stdin=str(HOSTILE["alias bomb"]), env=env)
    assert result.code == 1
    assert result.err.startswith("error: <stdin>:")
    assert "more than 100,000 YAML nodes" in result.err
    assert snapshot(aws) == before


def test_a_planted_object_is_named_by_every_reader_and_replaced_by_apply(
    aws: AWS, env: dict[str, str], tmp_path: Path
) -> None:
    assert oabctl("apply", "-f", "-", stdin=agent_manifest("other", namespace="team"), env=env)
    s3 = aws.client("s3")
    s3.put_object(
        Bucket=BUCKET,
        Key=KEY,
        Body=str(HOSTILE["alias bomb"]).encode(),
        Metadata={"generation": "4", "kind": "OABService", "deleted": "false"},
    )
    manifest = tmp_path / "bot.yaml"
    manifest.write_text(GOOD)
    reason = f"{KEY}: the stored object cannot be read: line "
    for argv in (
        ["get", "bot", "-n", "team"],
        ["describe", "bot", "-n", "team"],
        ["diff", "-f", str(manifest)],
        ["delete", "bot", "-n", "team"],
        ["rollback", "bot", "-n", "team", "--to-generation", "1"],
    ):
        result = oabctl(*argv, env=env)
        assert result.code == 1, (argv, result.err)
        assert reason in result.err, (argv, result.err)
        assert "more than 100,000 YAML nodes" in result.err
        assert "apply a corrected manifest with `oabctl apply`" in result.err
    listed = oabctl("get", "-n", "team", "-o", "name", env=env)
    assert (listed.code, listed.out) == (0, "oabservice.oab.dev/other\n")

    repaired = oabctl("apply", "-f", str(manifest), env=env)
    assert (repaired.code, repaired.out) == (0, "oabservice.oab.dev/bot configured\n")
    shown = oabctl("get", "bot", "-n", "team", "-o", "json", env=env).json()
    assert shown["metadata"]["generation"] == 5  # continues from the planted object's claim
