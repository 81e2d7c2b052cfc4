"""oabctl end to end: ``cli.main([...])`` against the emulator; exit codes and output formats."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oab.controller.cli import main, registry
from oab.controller.testing import AWS, oabctl

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BUCKET = "oab-control-plane"
TASK_DEF_PREFIX = "arn:aws:ecs:us-east-1:123456789012:task-definition"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OABCTL_CONFIG": str(tmp_path / "no-config")}


@pytest.fixture
def ready(aws: AWS, env: dict[str, str]) -> dict[str, str]:
    assert oabctl("init", env=env).code == 0
    return env


def _kiro() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "kiro-discord.yaml").read_text())
    return doc


def _versions(aws: AWS) -> int:
    resp = aws.client("s3").list_object_versions(Bucket=BUCKET)
    return len(resp.get("Versions", [])) + len(resp.get("DeleteMarkers", []))


def test_apply_get_delete_round_trip(aws: AWS, ready: dict[str, str]) -> None:
    first = oabctl("apply", "-f", str(EXAMPLES / "kiro-discord.yaml"), env=ready)
    assert (first.code, first.out) == (0, "oabservice.oab.dev/kiro-reviewer created\n")
    again = oabctl("apply", "-f", str(EXAMPLES / "kiro-discord.yaml"), env=ready)
    assert again.out == "oabservice.oab.dev/kiro-reviewer unchanged\n"

    table = oabctl("get", env=ready)
    header, row = table.out.splitlines()
    assert header.split() == [
        "NAME", "NAMESPACE", "CPU", "MEM", "CAPACITY", "PHASE", "GEN", "OBS-GEN", "AGE",
    ]  # fmt: skip
    assert row.split()[:8] == [
        "kiro-reviewer", "default", "1024", "2048", "FARGATE", "Pending", "1", "<none>",
    ]  # fmt: skip
    wide = oabctl("get", "-o", "wide", env=ready)
    assert "IMAGE" in wide.out
    assert "ghcr.io/openabdev/openab:stable-kiro" in wide.out
    assert oabctl("get", "-o", "name", env=ready).out == "oabservice.oab.dev/kiro-reviewer\n"
    one = json.loads(oabctl("get", "kiro-reviewer", "-o", "json", env=ready).out)
    assert one["metadata"]["generation"] == 1
    assert one["status"]["phase"] == "Pending"
    listed = yaml.safe_load(oabctl("get", "-o", "yaml", env=ready).out)
    assert listed["kind"] == "List"

    deleted = oabctl("delete", "kiro-reviewer", env=ready)
    assert (deleted.code, deleted.out) == (0, 'oabservice.oab.dev "kiro-reviewer" deleted\n')
    assert "Terminating" in oabctl("get", env=ready).out


def test_status_from_the_state_table_is_shown(aws: AWS, ready: dict[str, str]) -> None:
    oabctl("apply", "-f", str(EXAMPLES / "kiro-discord.yaml"), env=ready)
    aws.client("dynamodb").put_item(
        TableName=aws.tables.state,
        Item={
            "pk": {"S": "agent#default/kiro-reviewer"},
            "sk": {"S": "status"},
            "phase": {"S": "Running"},
            "observed_generation": {"N": "1"},
            "task_definition_arn": {"S": f"{TASK_DEF_PREFIX}/oab-default-kiro-reviewer:3"},
        },
    )
    row = oabctl("get", "-o", "wide", env=ready).out.splitlines()[1].split()
    assert row[5:8] == ["Running", "1", "1"]
    assert "oab-default-kiro-reviewer:3" in row


def test_fleet_apply_get_and_delete(aws: AWS, ready: dict[str, str]) -> None:
    result = oabctl("apply", "-f", str(EXAMPLES / "fleet.yaml"), env=ready)
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == "oabfleet.oab.dev/review-fleet created"
    assert len(lines) == 11
    fleets = oabctl("get", "fleets", "-A", env=ready)
    assert fleets.out.splitlines()[1].split()[:3] == ["review-fleet", "team-a", "10"]
    assert len(oabctl("get", "-n", "team-a", "-o", "name", env=ready).out.splitlines()) == 10
    child = oabctl("delete", "kiro-1", "-n", "team-a", env=ready)
    assert child.code == 1
    assert "owned by fleet 'review-fleet'" in child.err
    gone = oabctl("delete", "fleet", "review-fleet", "-n", "team-a", env=ready)
    assert gone.code == 0
    assert len(gone.out.splitlines()) == 11


def test_invalid_file_writes_nothing_and_names_file_and_field(
    aws: AWS, ready: dict[str, str], tmp_path: Path
) -> None:
    bad = _kiro()
    bad["spec"]["replicas"] = 2
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump_all([_kiro() | {"metadata": {"name": "ok"}}, bad]))
    before = _versions(aws)
    result = oabctl("apply", "-f", str(path), env=ready)
    assert result.code == 1
    assert result.out == ""
    assert str(path) in result.err
    assert "spec.replicas" in result.err
    assert "Traceback" not in result.err
    assert _versions(aws) == before


def test_agent_whose_ecs_name_is_taken_is_refused_with_file_and_field(
    aws: AWS, ready: dict[str, str], tmp_path: Path
) -> None:
    # The example's secrets belong to default/kiro-reviewer: let the renamed copies use them.
    shared = (
        "arn:aws:ssm:*:*:parameter/oab/default/kiro-reviewer/*,"
        "arn:aws:secretsmanager:*:*:secret:oab/default/kiro-reviewer/*"
    )
    ready = {**ready, "OAB_SECRET_ALLOWLIST": shared}
    first = _kiro() | {"metadata": {"name": "b-c", "namespace": "a"}}
    assert oabctl("apply", "-f", "-", stdin=yaml.safe_dump(first), env=ready).code == 0
    rival = _kiro() | {"metadata": {"name": "c", "namespace": "a-b"}}
    path = tmp_path / "rival.yaml"
    path.write_text(yaml.safe_dump_all([_kiro() | {"metadata": {"name": "ok"}}, rival]))
    before = _versions(aws)
    result = oabctl("apply", "-f", str(path), env=ready)
    assert (result.code, result.out) == (1, "")
    assert f"{path}:" in result.err
    assert "(document 2) metadata.name" in result.err
    assert "'oab-a-b-c' already belong to agent a/b-c" in result.err
    assert _versions(aws) == before  # the valid first document was not written either


def test_apply_from_stdin_and_dry_run(aws: AWS, ready: dict[str, str]) -> None:
    text = (EXAMPLES / "kiro-discord.yaml").read_text()
    dry = oabctl("apply", "-f", "-", "--dry-run", stdin=text, env=ready)
    assert dry.out == "oabservice.oab.dev/kiro-reviewer created (dry run)\n"
    assert oabctl("get", env=ready).err == "No resources found in default namespace.\n"
    assert oabctl("apply", "-f", "-", stdin=text, env=ready).code == 0


def test_diff_exit_codes(aws: AWS, ready: dict[str, str], tmp_path: Path) -> None:
    path = EXAMPLES / "kiro-discord.yaml"
    absent = oabctl("diff", "-f", str(path), env=ready)
    assert absent.code == 1
    assert "+  cpu: 1024" in absent.out
    oabctl("apply", "-f", str(path), env=ready)
    same = oabctl("diff", "-f", str(path), "--rendered", env=ready)
    assert (same.code, same.out) == (0, "")
    changed = _kiro()
    changed["spec"]["config"]["pool"]["max_sessions"] = 3
    new = tmp_path / "changed.yaml"
    new.write_text(yaml.safe_dump(changed))
    diff = oabctl("diff", "-f", str(new), "--rendered", env=ready)
    assert diff.code == 1
    assert "-      max_sessions: 10" in diff.out
    assert "+max_sessions = 3" in diff.out  # config.toml diff
    assert "task-definition.json" in diff.out  # the artifact path moves to generation 2


def test_render_needs_no_aws(env: dict[str, str]) -> None:
    offline = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens there
    result = oabctl("render", "-f", str(EXAMPLES / "kiro-discord.yaml"), "-o", "json", env=offline)
    assert result.code == 0, result.err
    rendered = json.loads(result.out)
    assert rendered["registerTaskDefinition"]["family"] == "oab-default-kiro-reviewer"
    assert 'bot_token = "${DISCORD_BOT_TOKEN}"' in rendered["configToml"]


def test_schema_and_config_view(env: dict[str, str]) -> None:
    schema = json.loads(oabctl("schema", env=env).out)
    assert "oneOf" in json.dumps(schema)
    view = yaml.safe_load(oabctl("config", "view", "--bucket", "flag-bucket", env=env).out)
    assert view["bucket"] == "flag-bucket"
    assert view["configFile"].endswith("no-config")


def test_every_command_group_registers_and_local_plugs_in_by_entry_point() -> None:
    # `oabctl local` is the local tooling's plugin: the CLI finds it through the
    # `oabctl.commands` entry point, never by importing oab.controller.local itself.
    main.build_parser()
    commands = main.commands()
    assert commands["local"].run.__module__ == "oab.controller.local.command"
    for name in ("init", "apply", "get", "delete", "diff", "render", "schema", "config", "wait"):
        assert commands[name].run.__module__.startswith("oab.controller.cli."), name


def test_usage_and_infra_exit_codes(env: dict[str, str]) -> None:
    assert oabctl("frobnicate", env=env).code == registry.EXIT_USAGE
    assert oabctl("get", "--bogus", env=env).code == registry.EXIT_USAGE
    assert oabctl(env=env).code == registry.EXIT_USAGE
    down = oabctl("get", env={**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert down.code == registry.EXIT_INFRA
    assert "cannot reach http://127.0.0.1:9" in down.err
    assert "Traceback" not in down.err
    debug = oabctl("get", "--debug", env={**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert "Traceback" in debug.err


def test_bad_settings_exit_1(env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.write_text('[profiles.default]\nbucket = "Not_A_Bucket"\n')
    result = oabctl("get", env={**env, "OABCTL_CONFIG": str(cfg)})
    assert result.code == 1
    assert "bucket" in result.err


def test_global_flags_work_after_the_command(aws: AWS, ready: dict[str, str]) -> None:
    result = oabctl("get", "--bucket", "missing-bucket", env=ready)
    assert result.code == registry.EXIT_INFRA
    assert "NoSuchBucket" in result.err


# ------------------------------------------------------------------------- fuzz (hypothesis)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**20),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = _kiro()
    path = draw(st.sampled_from(_paths(doc)))
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=6))] = draw(_values)
    else:
        parent[path[-1]] = draw(_values)
    return doc


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(doc=mutated())
def test_fuzz_invalid_documents_exit_1_and_write_nothing(
    aws: AWS, ready: dict[str, str], tmp_path: Path, doc: dict[str, Any]
) -> None:
    path = tmp_path / "fuzz.yaml"
    valid = copy.deepcopy(_kiro())
    valid["metadata"]["name"] = "fuzz-companion"
    path.write_text(yaml.safe_dump_all([valid, doc]))
    before = _versions(aws)
    result = oabctl("apply", "-f", str(path), env=ready)
    assert result.code in (0, 1), result.err  # never a crash, never an infra error
    assert "Traceback" not in result.err
    if result.code == 1:
        assert _versions(aws) == before
        lines = result.err.rstrip("\n").split("\n")
        # Config warnings (unknown OpenAB keys, passed through) may precede the errors.
        errors = [line for line in lines if not line.startswith(f"Warning: {path}")]
        assert errors
        assert all(line.startswith(f"error: {path}") for line in errors), lines
