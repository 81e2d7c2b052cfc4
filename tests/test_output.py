"""kubectl-style printers."""

from __future__ import annotations

import json

import yaml

from oab.controller.cli.output import Column, OutputFormat, format_age, render_rows, render_table

COLUMNS = [
    Column("NAME", lambda r: r["name"]),
    Column("CPU", lambda r: r["cpu"]),
    Column("IMAGE", lambda r: r.get("image"), wide_only=True),
]
ROWS = [{"name": "a", "cpu": 256, "image": "img:1"}, {"name": "longer-name", "cpu": 1024}]


def _render(
    fmt: OutputFormat, *, single: bool = False, rows: list[dict[str, object]] = ROWS
) -> str:
    return render_rows(
        rows,
        columns=COLUMNS,
        fmt=fmt,
        to_object=lambda r: {"kind": "X", "name": r["name"]},
        to_name=lambda r: f"x.oab.dev/{r['name']}",
        single=single,
    )


def test_table_is_aligned_with_three_spaces_and_hides_wide_columns() -> None:
    assert render_table(ROWS, COLUMNS).splitlines() == [
        "NAME          CPU",
        "a             256",
        "longer-name   1024",
    ]


def test_wide_adds_columns_and_fills_empty_cells_with_none() -> None:
    lines = _render(OutputFormat.WIDE).splitlines()
    assert lines[0].split() == ["NAME", "CPU", "IMAGE"]
    assert lines[2].split() == ["longer-name", "1024", "<none>"]


def test_json_and_yaml_wrap_several_objects_in_a_list() -> None:
    data = json.loads(_render(OutputFormat.JSON))
    assert data["kind"] == "List"
    assert [i["name"] for i in data["items"]] == ["a", "longer-name"]
    assert yaml.safe_load(_render(OutputFormat.YAML)) == data


def test_single_object_is_printed_bare() -> None:
    data = json.loads(_render(OutputFormat.JSON, single=True, rows=ROWS[:1]))
    assert data == {"kind": "X", "name": "a"}


def test_name_format() -> None:
    assert _render(OutputFormat.NAME) == "x.oab.dev/a\nx.oab.dev/longer-name"


def test_yaml_keeps_order_and_never_uses_anchors() -> None:
    shared = {"k": 1}
    text = render_rows(
        [1],
        columns=COLUMNS,
        fmt=OutputFormat.YAML,
        to_object=lambda _r: {"z": shared, "a": shared, "s": "line1\nline2\n"},
        to_name=str,
        single=True,
    )
    assert "&id" not in text
    assert "*id" not in text
    assert text.index("z:") < text.index("a:")
    assert "s: |" in text


def test_age_units() -> None:
    assert [format_age(s) for s in (None, -3, 5, 119, 120, 7199, 7200, 172799, 172800)] == [
        "<unknown>",
        "0s",
        "5s",
        "119s",
        "2m",
        "119m",
        "2h",
        "47h",
        "2d",
    ]
