"""kubectl-style printers: aligned tables, ``-o wide|json|yaml|name``.

Design
------
A printer is pure: it turns already-fetched rows into text and never talks to AWS. A command
describes its table once as a tuple of :class:`Column` (header, how to read a cell from a row,
whether it only shows with ``-o wide``) and hands the printer its rows together with the full
objects for ``json``/``yaml`` and the ``kind/name`` for ``name``. Output conventions copied from
kubectl: upper-case headers, columns separated by three spaces, ``<none>`` for empty cells,
``No resources found in NS namespace.`` on stderr when nothing matches, a ``List`` wrapper for
several objects in json/yaml and the bare object for exactly one named object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TextIO

import yaml

__all__ = [
    "Column",
    "OutputFormat",
    "as_list",
    "emit",
    "format_age",
    "render_rows",
    "render_table",
    "to_json",
    "to_yaml",
]


class OutputFormat(StrEnum):
    """Values accepted by ``-o``."""

    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"
    NAME = "name"


@dataclass(frozen=True)
class Column:
    """One table column: header, cell getter, and whether it shows only with ``-o wide``."""

    header: str
    cell: Callable[[Any], object]
    wide_only: bool = False


_NONE = "<none>"


def _text(value: object) -> str:
    if value is None or value in ("", [], ()):
        return _NONE
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def render_table(rows: Sequence[Any], columns: Sequence[Column], *, wide: bool = False) -> str:
    """Aligned text table (without a trailing newline); ``wide`` adds the wide-only columns."""
    shown = [c for c in columns if wide or not c.wide_only]
    cells = [[c.header for c in shown]] + [[_text(c.cell(row)) for c in shown] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(shown))]
    lines = []
    for r in cells:
        parts = [cell.ljust(widths[i]) for i, cell in enumerate(r)]
        lines.append("   ".join(parts).rstrip())
    return "\n".join(lines)


def to_json(obj: object) -> str:
    """Pretty JSON the way ``kubectl -o json`` prints it (2-space indent, key order kept)."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)


class _Dumper(yaml.SafeDumper):
    """Safe YAML dumper that keeps key order and writes multi-line strings as blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        # Shared sub-objects are printed in full: anchors (&id001) confuse readers and diffs.
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(obj: object) -> str:
    """Block-style YAML with key order kept (what ``kubectl -o yaml`` looks like)."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def as_list(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Wrap several objects the way kubectl does for ``-o json|yaml``."""
    return {"apiVersion": "v1", "kind": "List", "items": list(objects)}


def render_rows(
    rows: Sequence[Any],
    *,
    columns: Sequence[Column],
    fmt: OutputFormat,
    to_object: Callable[[Any], Mapping[str, Any]],
    to_name: Callable[[Any], str],
    single: bool = False,
) -> str:
    """Render ``rows`` in ``fmt``; ``single`` prints one bare object instead of a ``List``."""
    if fmt in (OutputFormat.TABLE, OutputFormat.WIDE):
        return render_table(rows, columns, wide=fmt is OutputFormat.WIDE)
    if fmt is OutputFormat.NAME:
        return "\n".join(to_name(r) for r in rows)
    objects = [to_object(r) for r in rows]
    payload: object = objects[0] if single and len(objects) == 1 else as_list(objects)
    if fmt is OutputFormat.JSON:
        return to_json(payload)
    return to_yaml(payload).rstrip("\n")


def format_age(seconds: float | None) -> str:
    """kubectl's short age: ``45s``, ``5m``, ``3h``, ``2d``, ``<unknown>`` for None."""
    if seconds is None:
        return "<unknown>"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def emit(text: str, stream: TextIO) -> None:
    """Write ``text`` plus a newline unless it is empty."""
    if text:
        stream.write(text + "\n")
