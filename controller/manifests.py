"""Loading manifests: YAML files, directories and stdin into validated API objects.

Design
    Each YAML stream is composed node by node (PyYAML's composer) so every document keeps its
    node tree; data is constructed from those nodes with the safe constructor, validated with
    ``oab.controller.api.parse_document``, and each issue's field path is walked back through the
    node tree to the line that holds it (the key's line, or the nearest existing parent when the
    field is missing).

Invariants
    - All or nothing: ``load_paths`` returns every document or raises ``ManifestError`` holding
      every issue found in every file (nothing is half-loaded, so callers write nothing).
    - Duplicate keys in a mapping, non-mapping documents and YAML syntax errors are issues too.
      Empty documents (``---`` with nothing after it) are skipped.
    - Object identities are unique across one load: two documents (or a fleet child and a
      service) naming the same ``kind namespace/name`` are an error, since one apply could not
      say which wins.
    - Directories are read non-recursively, ``*.yaml``/``*.yml`` in sorted order; ``-`` is stdin.

Messages never include field values of token fields: validators do not echo them, and issues
carry no input values.

There is no time in this module.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from oab.controller.api import (
    FieldIssue,
    InvalidDocument,
    OABFleet,
    OABService,
    ecs_name,
    expand_fleet,
    parse_document,
)

__all__ = ["STDIN", "LoadedDocument", "ManifestError", "ManifestIssue", "load_paths", "load_text"]

#: The path that means "read standard input".
STDIN = "-"
_STDIN_NAME = "<stdin>"
_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, kw_only=True)
class ManifestIssue:
    """One problem in one document: where it is and how to fix it."""

    file: str
    document: int | None
    line: int | None
    path: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        if self.document is not None:
            where += f" (document {self.document})"
        text = f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text


@dataclass
class ManifestError(ValueError):
    """Manifests failed to load; ``issues`` lists every problem. Not retryable."""

    issues: list[ManifestIssue] = field(default_factory=list)
    retryable: bool = False

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


@dataclass(frozen=True, kw_only=True)
class LoadedDocument:
    """A validated document with where it came from (``index`` is 1-based within its file)."""

    source: str
    index: int
    line: int
    obj: OABService | OABFleet
    raw: dict[str, Any]

    def issue(self, path: str, message: str, hint: str | None = None) -> ManifestIssue:
        """A problem with this whole document (found after loading), at field ``path``."""
        return ManifestIssue(
            file=self.source,
            document=self.index,
            line=self.line,
            path=path,
            message=message,
            hint=hint,
        )


def load_paths(paths: Sequence[str], *, stdin: TextIO | None = None) -> list[LoadedDocument]:
    """Load files, directories (``*.yaml``/``*.yml``, sorted) and ``-`` (stdin), all or nothing.

    Raises ``ManifestError`` listing every issue of every file.
    """
    docs: list[LoadedDocument] = []
    issues: list[ManifestIssue] = []
    for source, text in _read_sources(paths, stdin=stdin, issues=issues):
        try:
            docs.extend(load_text(text, source=source))
        except ManifestError as exc:
            issues.extend(exc.issues)
    if not issues:
        issues.extend(_identity_clashes(docs))
    if issues:
        raise ManifestError(issues)
    return docs


def load_text(text: str, *, source: str = _STDIN_NAME) -> list[LoadedDocument]:
    """Load every document of one YAML stream; raises ``ManifestError`` on any issue."""
    docs: list[LoadedDocument] = []
    issues: list[ManifestIssue] = []
    loader = yaml.SafeLoader(text)
    index = 0
    try:
        while loader.check_node():
            index += 1
            node = loader.get_node()
            if node is None or _is_empty(node):
                continue
            line = node.start_mark.line + 1
            dupes = list(_duplicate_keys(node, ()))
            if dupes:
                for path, dup_line in dupes:
                    issues.append(
                        ManifestIssue(
                            file=source,
                            document=index,
                            line=dup_line,
                            path=FieldIssue(path, "").dotted,
                            message="duplicate key",
                            hint="a key may appear once per mapping; remove one of them",
                        )
                    )
                continue
            data = loader.construct_document(node)
            try:
                obj = parse_document(data)
            except InvalidDocument as exc:
                issues.extend(_locate(exc.issues, node, source=source, index=index))
                continue
            docs.append(LoadedDocument(source=source, index=index, line=line, obj=obj, raw=data))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        issues.append(
            ManifestIssue(
                file=source,
                document=max(index, 1),
                line=mark.line + 1 if mark is not None else None,
                path="",
                message=f"not valid YAML: {problem}",
                hint="fix the YAML syntax (indentation, quoting, ':' after keys)",
            )
        )
    finally:
        loader.dispose()
    if issues:
        raise ManifestError(issues)
    return docs


def _read_sources(
    paths: Sequence[str], *, stdin: TextIO | None, issues: list[ManifestIssue]
) -> Iterable[tuple[str, str]]:
    if not paths:
        issues.append(
            ManifestIssue(
                file="", document=None, line=None, path="", message="no manifest paths given"
            )
        )
    for raw in paths:
        if raw == STDIN:
            yield _STDIN_NAME, (stdin or sys.stdin).read()
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
            if not files:
                issues.append(_file_issue(raw, "directory holds no *.yaml or *.yml files"))
        elif path.is_file():
            files = [path]
        else:
            issues.append(_file_issue(raw, "no such file or directory"))
            continue
        for file in files:
            try:
                yield str(file), file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                issues.append(_file_issue(str(file), f"cannot read: {exc}"))


def _file_issue(file: str, message: str) -> ManifestIssue:
    return ManifestIssue(file=file, document=None, line=None, path="", message=message)


def _is_empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _duplicate_keys(
    node: yaml.Node, path: tuple[str | int, ...]
) -> Iterable[tuple[tuple[str | int, ...], int]]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if isinstance(key, str) and key != "<<":
                if key in seen:
                    yield (*path, key), key_node.start_mark.line + 1
                seen.add(key)
                yield from _duplicate_keys(value_node, (*path, key))
            else:
                yield from _duplicate_keys(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, i))


def _locate(
    issues: Iterable[FieldIssue], node: yaml.Node, *, source: str, index: int
) -> list[ManifestIssue]:
    return [
        ManifestIssue(
            file=source,
            document=index,
            line=_line_of(node, issue.path),
            path=issue.dotted if issue.path else "",
            message=issue.message,
            hint=issue.hint,
        )
        for issue in issues
    ]


def _line_of(node: yaml.Node, path: Sequence[str | int]) -> int:
    """Line of the deepest node on ``path`` (a key's own line when the path ends at a key)."""
    line: int = node.start_mark.line + 1
    current: yaml.Node | None = node
    for part in path:
        if isinstance(current, yaml.MappingNode):
            match = next(
                (
                    (k, v)
                    for k, v in current.value
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part)
                ),
                None,
            )
            if match is None:
                return line
            line = match[0].start_mark.line + 1
            current = match[1]
        elif (
            isinstance(current, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(current.value)
        ):
            current = current.value[part]
            line = current.start_mark.line + 1
        else:
            return line
    return line


def _identity_clashes(docs: Sequence[LoadedDocument]) -> list[ManifestIssue]:
    """The same object twice, or two agents with one ECS name, across every loaded document."""
    issues: list[ManifestIssue] = []
    seen: dict[tuple[str, str], LoadedDocument] = {}
    ecs_names: dict[str, tuple[str, LoadedDocument]] = {}
    for doc in docs:
        objects: list[OABService | OABFleet] = [doc.obj]
        if isinstance(doc.obj, OABFleet):
            objects.extend(expand_fleet(doc.obj))
        for obj in objects:
            path = "metadata.name" if obj is doc.obj else "spec.agents"
            first = seen.get((obj.kind, obj.key))
            if first is not None:
                message = (
                    f"{obj.kind} {obj.key} is also defined in {first.source} "
                    f"(document {first.index})"
                )
                hint = "define each object once per apply"
                issues.append(doc.issue(path, message, hint))
                continue
            seen[(obj.kind, obj.key)] = doc
            if not isinstance(obj, OABService):
                continue
            name = ecs_name(obj.metadata.namespace, obj.metadata.name)
            rival_key, rival_doc = ecs_names.setdefault(name, (obj.key, doc))
            if rival_key != obj.key:
                message = (
                    f"OABService {obj.key} and {rival_key} (in {rival_doc.source}, "
                    f"document {rival_doc.index}) both map to the ECS name {name!r}"
                )
                hint = "ECS names join namespace and name with '-'; rename one of them"
                issues.append(doc.issue(path, message, hint))
    return issues
