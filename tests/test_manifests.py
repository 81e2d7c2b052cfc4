"""The manifest loader: files, directories, stdin, line numbers, all-or-nothing, fuzz."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oab.controller.api.fleet import OABFleet
from oab.controller.api.manifests import ManifestError, load_paths, load_text
from oab.controller.api.service import OABService

GOOD = textwrap.dedent(
    """\
    apiVersion: oab.dev/v1
    kind: OABService
    metadata:
      name: {name}
    spec:
      cpu: 512
      memory: 1024
      taskDefinition:
        image: ghcr.io/openabdev/openab:stable-kiro
      secrets:
        - name: DISCORD_BOT_TOKEN
          source: ssm
          path: /oab/default/{name}/discord-token
      config:
        agent:
          preset: kiro
        discord:
          bot_token: ${{DISCORD_BOT_TOKEN}}
          allowed_channels: ["123456789012345678"]
    """
)


def good(name: str = "bot") -> str:
    return GOOD.format(name=name)


def issues(text: str) -> list[Any]:
    with pytest.raises(ManifestError) as info:
        load_text(text, source="m.yaml")
    return info.value.issues


def test_loads_multi_document_stream_and_skips_empty_documents() -> None:
    docs = load_text(good("a") + "---\n---\n" + good("b"), source="m.yaml")
    assert [(d.index, d.obj.metadata.name) for d in docs] == [(1, "a"), (3, "b")]
    assert docs[1].line == 22
    assert all(isinstance(d.obj, OABService) for d in docs)


def test_error_carries_file_document_line_path_and_hint() -> None:
    text = good("a") + "---\n" + good("b").replace("cpu: 512", "cpu: 300")
    (issue,) = issues(text)
    assert (issue.file, issue.document, issue.line, issue.path) == ("m.yaml", 2, 26, "spec.cpu")
    assert str(issue) == (
        "m.yaml:26 (document 2) spec.cpu: 300 is not a Fargate CPU value; "
        "use one of 256, 512, 1024, 2048, 4096, 8192, 16384"
    )


def test_nested_list_item_line() -> None:
    text = good().replace(
        '["123456789012345678"]', "\n        - '123456789012345678'\n        - 42"
    )
    (issue,) = issues(text)
    assert issue.path == "spec.config.discord.allowed_channels[1]"
    assert issue.line == text.splitlines().index("        - 42") + 1
    assert "quote" in (issue.hint or "")


def test_missing_field_points_at_parent_line() -> None:
    text = good().replace("    image: ghcr.io/openabdev/openab:stable-kiro\n", "    {}\n")
    text = text.replace("  taskDefinition:\n    {}\n", "  taskDefinition: {}\n")
    (issue,) = issues(text)
    assert issue.path == "spec.taskDefinition.image"
    assert issue.message == "required field is missing"
    assert issue.line == text.splitlines().index("  taskDefinition: {}") + 1


def test_duplicate_keys_rejected() -> None:
    text = good().replace("  memory: 1024\n", "  memory: 1024\n  memory: 2048\n")
    (issue,) = issues(text)
    assert (issue.path, issue.message, issue.line) == ("spec.memory", "duplicate key", 8)


@pytest.mark.parametrize("doc", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_documents_rejected(doc: str) -> None:
    (issue,) = issues(good() + "---\n" + doc)
    assert issue.document == 2
    assert "must be a mapping" in issue.message


def test_yaml_syntax_error_has_line() -> None:
    (issue,) = issues(good() + "---\nkind: [unclosed\n")
    assert issue.message.startswith("not valid YAML")
    assert issue.line is not None


def test_unsafe_tags_rejected() -> None:
    (issue,) = issues("!!python/object/apply:os.system ['true']\n")
    assert issue.message == "the YAML tag !!python/object/apply:os.system is not allowed"
    assert issue.line == 1


def test_directories_sorted_yaml_only_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(good("b"))
    (tmp_path / "a.yml").write_text(good("a"))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    docs = load_paths([str(tmp_path), "-"], stdin=io.StringIO(good("c")))
    assert [(Path(d.source).name, d.obj.metadata.name) for d in docs] == [
        ("a.yml", "a"),
        ("b.yaml", "b"),
        ("<stdin>", "c"),
    ]


def test_all_or_nothing_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(good("a"))
    (tmp_path / "b.yaml").write_text(good("b").replace("replicas", "x") + "  replicas: 3\n")
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError) as info:
        load_paths([str(tmp_path), missing])
    found = {(Path(i.file).name, i.path) for i in info.value.issues}
    assert found == {("b.yaml", "spec.replicas"), ("nope.yaml", "")}


def test_same_object_twice_in_one_load_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(good("a"))
    (tmp_path / "b.yaml").write_text(good("a"))
    with pytest.raises(ManifestError) as info:
        load_paths([str(tmp_path)])
    (issue,) = info.value.issues
    assert "also defined in" in issue.message
    assert Path(issue.file).name == "b.yaml"


def test_two_services_with_one_ecs_name_in_one_load_rejected() -> None:
    rival = good("c").replace("metadata:\n", "metadata:\n  namespace: a-b\n")
    mine = good("b-c").replace("metadata:\n", "metadata:\n  namespace: a\n")
    with pytest.raises(ManifestError) as info:
        load_paths(["-"], stdin=io.StringIO(rival + "---\n" + mine))
    (issue,) = info.value.issues
    assert (issue.document, issue.path) == (2, "metadata.name")
    assert "a/b-c and a-b/c" in issue.message
    assert "'oab-a-b-c'" in issue.message


def test_fleet_child_clashing_with_a_service_rejected() -> None:
    fleet = textwrap.dedent(
        """\
        apiVersion: oab.dev/v1
        kind: OABFleet
        metadata: {name: fl}
        spec:
          defaults:
            cpu: 256
            memory: 512
            taskDefinition: {image: img}
            config:
              agent: {preset: kiro}
              discord: {bot_token: "${DISCORD_BOT_TOKEN}"}
          agents: [{name: bot}]
        """
    )
    docs = load_text(fleet, source="f.yaml")
    assert isinstance(docs[0].obj, OABFleet)
    with pytest.raises(ManifestError) as info:
        load_paths(["-"], stdin=io.StringIO(good("bot") + "---\n" + fleet))
    assert info.value.issues[0].path == "spec.agents"


def test_literal_token_never_in_error_text() -> None:
    secret = "MTIzNDU2Nzg5.super.secret"
    text = good().replace("${DISCORD_BOT_TOKEN}", secret)
    with pytest.raises(ManifestError) as info:
        load_text(text)
    assert secret not in str(info.value)
    assert info.value.issues[0].path == "spec.config.discord.bot_token"


# --- fuzz ------------------------------------------------------------------------------------

BASE: dict[str, Any] = yaml.safe_load(good())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["${X}", "oab.dev/v1", "OABService", "OABFleet", "ssm", "kiro", "off"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths_of(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths_of(v, (*prefix, i))
    return out


ALL_PATHS = paths_of(BASE)[1:]


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    import copy

    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent: Any = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(values)
            elif action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue
    return doc


def check_outcome(text: str) -> None:
    """Either every document loads, or ManifestError explains each problem with a field path."""
    rejected: list[Any] = []
    try:
        docs = load_text(text, source="fuzz.yaml")
    except ManifestError as exc:
        rejected = exc.issues
        docs = []
    if not docs:
        for issue in rejected:
            assert issue.message
            # Every rejection names the offending field, or the line of a YAML-level refusal.
            assert issue.path or issue.line is not None, issue
    for doc in docs:
        assert isinstance(doc.obj, OABService | OABFleet)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_mutated_manifests_only_fail_with_manifest_error(doc: Any) -> None:
    check_outcome(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(values)
def test_fuzz_random_structures(doc: Any) -> None:
    check_outcome(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}\n '\"#&*!|>%@`,?0")), max_size=60))
def test_fuzz_yamlish_text(text: str) -> None:
    check_outcome(text)
