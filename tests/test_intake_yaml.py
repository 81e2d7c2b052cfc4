"""The capped YAML intake: alias bombs, depth, encodings, characters, types and size caps.

Pure tests of :mod:`oab.controller.api.intake` through the manifest loader (no AWS). Each hostile
shape must be refused with a ``ManifestError`` naming the file, the line (and document) and a
fix, and must cost its text, never its expansion (measured with tracemalloc).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oab.controller.api.intake import (
    MAX_DEPTH,
    MAX_NODES,
    ManifestError,
    ManifestIssue,
    ManifestLimits,
    load_stored,
)
from oab.controller.api.manifests import load_bytes, load_paths, load_text

HEAD = textwrap.dedent(
    """\
    apiVersion: oab.dev/v1
    kind: OABService
    metadata: {name: bot}
    spec:
      cpu: 256
      memory: 512
      taskDefinition: {image: img}
      secrets: [{name: DISCORD_BOT_TOKEN, source: ssm, path: /oab/default/bot/discord-token}]
      config:
        agent: {preset: kiro}
        discord: {bot_token: "${DISCORD_BOT_TOKEN}", allowed_channels: ["123456789012345678"]}
    """
)
#: The line of the first key under ``spec.platform.k8s`` in :func:`k8s`.
K8S_LINE = HEAD.count("\n") + 3


def k8s(body: str) -> str:
    """A valid manifest whose verbatim ``spec.platform.k8s`` holds ``body`` (YAML, indented 6)."""
    return HEAD + "  platform:\n    k8s:\n" + textwrap.indent(textwrap.dedent(body), "      ")


def refused(text: str | bytes, **limits: int) -> ManifestIssue:
    """The one issue loading ``text`` gives (``limits`` override the defaults)."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    with pytest.raises(ManifestError) as info:
        load_bytes(data, source="m.yaml", limits=ManifestLimits(**limits))
    (issue,) = info.value.issues
    assert issue.file == "m.yaml"
    return issue


def peak_bytes(run: Callable[[], Any]) -> int:
    """Peak Python allocation while ``run()`` executes (its ManifestError swallowed)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with contextlib.suppress(ManifestError):
            run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
"""


# ------------------------------------------------------------------------------ alias bombs


def test_billion_laughs_is_refused_at_the_alias_that_crosses_the_node_cap() -> None:
    text = k8s(LAUGHS)
    issue = refused(text)
    assert issue.message == f"more than {MAX_NODES:,} YAML nodes (the limit per file)"
    # a..e expand to 74,732 nodes; f (9^6 strings) crosses the cap.
    assert (issue.document, issue.line) == (1, K8S_LINE + 5)
    assert issue.path.startswith("spec.platform.k8s.f[")
    assert "alias" in (issue.hint or "")


def test_an_alias_bomb_costs_its_text_not_its_expansion() -> None:
    # Fully expanded, this is 43 million strings (several GB); refused after ~100,000 nodes.
    text = k8s(LAUGHS)
    assert peak_bytes(lambda: load_text(text)) < 4 << 20


def test_a_repeated_long_string_is_refused_by_the_character_cap() -> None:
    text = k8s('a: &a "' + "x" * 100_000 + '"\nb: [' + ", ".join(["*a"] * 30) + "]\n")
    issue = refused(text)
    assert issue.message == "more than 2 MiB of text in values and keys (the limit per file)"
    assert issue.path == "spec.platform.k8s.b[19]"  # the 21st copy crosses 2 MiB
    assert peak_bytes(lambda: load_text(text)) < 4 << 20


def test_alias_expansion_is_counted_exactly() -> None:
    # 2 (document + spec...) aside, the count is exact: accepted at N, refused at N - 1.
    doc = k8s("a: &a [x, y]\nb: [*a, *a, *a]\n")
    nodes = _expanded_nodes(doc)
    load_text(doc, limits=ManifestLimits(nodes=nodes))
    issue = refused(doc, nodes=nodes - 1)
    assert "YAML nodes" in issue.message


def _expanded_nodes(text: str) -> int:
    """Nodes of ``text`` with aliases expanded, counted from the constructed data."""
    import yaml

    def count(value: Any) -> int:
        if isinstance(value, dict):
            return 1 + sum(1 + count(v) for v in value.values())
        if isinstance(value, list):
            return 1 + sum(count(v) for v in value)
        return 1

    return count(yaml.safe_load(text))


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("x: &a [*a]\n", "spec.platform.k8s.x[0]"),
        ("x: &a {y: *a}\n", "spec.platform.k8s.x.y"),
        ("x: &a {<<: *a}\n", "spec.platform.k8s.x.<<"),
        ("x: &a [1, [2, [3, *a]]]\n", "spec.platform.k8s.x[1][1][1]"),
    ],
)
def test_recursive_aliases_are_refused(body: str, path: str) -> None:
    issue = refused(k8s(body))
    assert "recursive alias" in issue.message
    assert (issue.line, issue.path) == (K8S_LINE, path)


def test_merge_keys_still_work() -> None:
    (doc,) = load_text(k8s("base: &b {x: 1, y: 2}\nover: {<<: *b, y: 3}\n"))
    assert doc.raw["spec"]["platform"]["k8s"]["over"] == {"x": 1, "y": 3}


# ----------------------------------------------------------------------------------- depth


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_nesting_is_capped_before_anything_recurses() -> None:
    # The document, spec, platform and k8s are 4 levels; "a: [...]" is one more per bracket.
    load_text(k8s(f"a: {_nested(MAX_DEPTH - 4)}\n"))
    issue = refused(k8s(f"a: {_nested(MAX_DEPTH - 3)}\n"))
    assert issue.message == f"nested deeper than {MAX_DEPTH} levels (the limit)"
    # Far deeper than Python's recursion limit: refused, not a RecursionError (libyaml's own
    # limit of 1,000 levels may speak first).
    assert "nest" in refused(k8s(f"a: {_nested(5_000)}\n")).message


def test_aliases_count_at_the_depth_where_they_are_used() -> None:
    deep = _nested(MAX_DEPTH - 10)
    load_text(k8s(f"a: &d {deep}\n"))
    issue = refused(k8s(f"a: &d {deep}\nb: [[[[[[[[[[*d]]]]]]]]]]\n"))
    assert issue.message.startswith("nested deeper than")
    assert issue.line == K8S_LINE + 1


# ----------------------------------------------------------------------- bytes and characters


def test_raw_control_characters_are_refused_with_line_column_and_document() -> None:
    text = HEAD + "---\n" + HEAD.replace("cpu: 256", "cpu: 25\x006")
    issue = refused(text)
    assert issue.message == "the control character U+0000 at column 10 cannot appear in YAML"
    assert (issue.document, issue.line) == (2, HEAD.count("\n") + 1 + 5)


@pytest.mark.parametrize("escape", ["\\x00", "\\e", "\\x1b[31m", "\\x7f", "\\N", "\\x9b"])
def test_escaped_control_characters_are_refused(escape: str) -> None:
    issue = refused(k8s(f'a: "ok{escape}"\n'))
    assert "control character" in issue.message
    assert (issue.line, issue.path) == (K8S_LINE, "spec.platform.k8s.a")


def test_tabs_and_line_breaks_in_values_are_fine() -> None:
    (doc,) = load_text(k8s('a: "x\\ty\\nz\\r"\n'))
    assert doc.raw["spec"]["platform"]["k8s"]["a"] == "x\ty\nz\r"


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ud83d\\ude00"])
def test_surrogate_escapes_are_refused(escape: str) -> None:
    issue = refused(k8s(f'a: "{escape}"\n'))
    assert issue.line == K8S_LINE
    # libyaml's scanner refuses the escape itself; PyYAML's leaves it to the intake check.
    assert "surrogate" in issue.message or "escape" in issue.message


def test_a_raw_lone_surrogate_from_a_text_stream_is_refused_with_its_line() -> None:
    with pytest.raises(ManifestError) as info:
        load_paths(["-"], stdin=io.StringIO(HEAD + "  env: {A: \ud800}\n"))
    (issue,) = info.value.issues
    assert issue.file == "<stdin>"
    assert issue.line == HEAD.count("\n") + 1
    assert "not valid UTF-8" in issue.message


def test_invalid_utf8_is_refused_with_line() -> None:
    data = HEAD.encode() + b"  env: {A: \xff\xfe}\n"
    issue = refused(data)
    assert issue.message == "not valid UTF-8 at column 12 (byte 0xff: invalid start byte)"
    assert (issue.document, issue.line, issue.hint) == (
        1,
        HEAD.count("\n") + 1,
        "save the file as UTF-8",
    )


def test_utf8_and_utf16_with_a_bom_are_read() -> None:
    for data in (codecs.BOM_UTF8 + HEAD.encode(), HEAD.encode("utf-16")):
        (doc,) = load_bytes(data, source="m.yaml")
        assert doc.obj.metadata.name == "bot"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (HEAD.encode("utf-32"), "the file is UTF-32, which is not accepted"),
        (codecs.BOM_UTF16_LE + HEAD.encode("utf-16-le")[:-1], "not valid UTF-16"),
        (codecs.BOM_UTF16_LE + b"\x00\xd8a\x00", "not valid UTF-16"),  # lone surrogate
        (b"\xef\xbb", "not valid UTF-8"),  # half a BOM
    ],
)
def test_bad_encodings_are_refused(data: bytes, message: str) -> None:
    assert refused(data).message.startswith(message)


# ---------------------------------------------------------------------------- types and tags


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!binary aGVsbG8=", "the YAML tag !!binary is not allowed"),
        ("!!set {x, y}", "the YAML tag !!set is not allowed"),
        ("!!omap [{x: 1}]", "the YAML tag !!omap is not allowed"),
        ("!!timestamp 2024-01-01", "the YAML tag !!timestamp is not allowed"),
        ("!custom x", "the YAML tag !custom is not allowed"),
        ("!!python/object:os.system x", "the YAML tag !!python/object:os.system is not allowed"),
        ("=", "this plain value is read as YAML type '!!value'"),
        ("<<", "this plain value is read as YAML type '!!merge'"),
        ("9223372036854775808", "an integer outside the 64-bit range"),
        ("-9223372036854775809", "an integer outside the 64-bit range"),
        ("9" * 5_000, "an integer outside the 64-bit range"),
        ("1" + ":1" * 5_000, "an integer outside the 64-bit range"),  # base 60, YAML 1.1
        ("0b_", "not a valid integer"),
        ("!!bool maybe", "not a valid boolean"),
        ("!!int twelve", "not a valid integer"),
        ("!!float abc", "not a valid number"),
        ("0x_", "not a valid integer"),
    ],
)
def test_only_json_types_are_read(value: str, message: str) -> None:
    issue = refused(k8s(f"a: {value}\n"))
    assert issue.message == message
    assert (issue.line, issue.path) == (K8S_LINE, "spec.platform.k8s.a")


def test_64_bit_integers_and_plain_timestamps_are_read() -> None:
    (doc,) = load_text(
        k8s("a: 9223372036854775807\nb: -9223372036854775808\nc: 2024-01-01\nd: 2024-13-45\n")
    )
    assert doc.raw["spec"]["platform"]["k8s"] == {
        "a": 2**63 - 1,
        "b": -(2**63),
        "c": "2024-01-01",  # text, as Kubernetes reads YAML
        "d": "2024-13-45",
    }


@pytest.mark.parametrize(
    ("key", "kind"), [("1", "int"), ("~", "null"), ("yes", "bool"), ("1.5", "float")]
)
def test_mapping_keys_must_be_text(key: str, kind: str) -> None:
    issue = refused(k8s(f"{key}: x\n"))
    assert issue.message == f"the key {key!r} is read as YAML type {kind!r}, not text"
    assert issue.hint == f'quote it: "{key}"'
    assert issue.path == "spec.platform.k8s"


def test_a_huge_key_is_never_echoed_back_whole() -> None:
    key = "k" * 100_000
    deep = refused(k8s(f"? {key}\n: {_nested(MAX_DEPTH)}\n"))  # refused by the intake
    unknown = refused(HEAD + f"  ? {key}\n  : 1\n")  # refused by the API validation
    for issue in (deep, unknown):
        assert len(str(issue)) < 1_000
        assert "k" * 61 + "..." in issue.path


def test_collection_keys_are_refused() -> None:
    issue = refused(k8s("? [a, b]\n: x\n"))
    assert issue.message == "a mapping key must be text, not a list or a mapping"


# ------------------------------------------------------------------------------------- sizes


def test_a_file_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(HEAD + "#" * 5_000 + "\n")
    with pytest.raises(ManifestError) as info:
        load_paths([str(path)], limits=ManifestLimits(file_bytes=4_096))
    (issue,) = info.value.issues
    assert (issue.file, issue.line) == (str(path), None)
    assert issue.message == "larger than 4,096 bytes (the limit per manifest file)"


def test_stdin_over_the_cap_is_refused() -> None:
    stdin = io.BytesIO(HEAD.encode() + b"#" * 5_000)
    with pytest.raises(ManifestError) as info:
        load_paths(["-"], stdin=stdin, limits=ManifestLimits(file_bytes=4_096))
    assert info.value.issues[0].file == "<stdin>"
    assert "larger than 4,096 bytes" in info.value.issues[0].message


def test_one_load_reads_at_most_the_load_cap(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / f"{name}.yaml").write_text(HEAD.replace("name: bot", f"name: {name}"))
    limits = ManifestLimits(load_bytes=2 * len(HEAD) + 10)
    with pytest.raises(ManifestError) as info:
        load_paths([str(tmp_path)], limits=limits)
    (issue,) = info.value.issues
    assert issue.file.endswith("c.yaml")
    assert "(the limit per load)" in issue.message


def test_an_object_too_large_to_store_is_refused_at_load() -> None:
    text = k8s("a: " + "x" * 6_000 + "\n")
    issue = refused(text, stored_bytes=6_000)
    assert (issue.line, issue.path) == (1, "metadata.name")
    assert "would be stored as about" in issue.message
    assert "over the 6,000 bytes limit per stored object" in issue.message


def test_a_fleet_counts_its_defaults_once_per_agent() -> None:
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
          agents:
        """
    )
    # 19 nodes of defaults and 3 per agent entry: 22 per agent once expanded, + the list.
    load_text(fleet + _agents(45), limits=ManifestLimits(nodes=22 * 45 + 1))
    issue = refused(fleet + _agents(46), nodes=22 * 45 + 1)
    assert issue.message.startswith(f"the fleet expands to {22 * 46 + 1:,} YAML nodes")
    assert issue.path == "spec.agents"
    assert issue.line == fleet.count("\n")
    assert "spec.defaults is copied into every agent" in issue.message


def _agents(n: int) -> str:
    return "".join(f"    - {{name: a{i}}}\n" for i in range(n))


# ------------------------------------------------------------------------------ stored bodies


def test_stored_bodies_are_read_under_the_same_caps() -> None:
    body = k8s(LAUGHS).encode()
    with pytest.raises(ManifestError) as info:
        load_stored(body, source="manifests/default/bot.yaml")
    (issue,) = info.value.issues
    assert issue.file == "manifests/default/bot.yaml"
    assert "YAML nodes" in issue.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the stored object is empty"),
        (b"a: 1\n---\nb: 2\n", "a stored object holds one document"),
        (b"- a\n", "a stored object must be a mapping"),
        (b"x" * 2_000, "the stored object is 2,000 bytes, over the 1,024 bytes limit"),
    ],
)
def test_stored_bodies_must_be_one_small_mapping(body: bytes, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_stored(body, source="k", limits=ManifestLimits(stored_bytes=1_024))
    assert info.value.issues[0].message == message
