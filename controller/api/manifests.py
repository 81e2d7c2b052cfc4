"""Loading manifests: files, directories and stdin into validated API objects.

Design
    Bytes and YAML are read by :mod:`oab.controller.api.intake` under its caps (size, nodes and
    characters with aliases expanded, depth, JSON types only); this module turns each checked
    document into an API object with :func:`oab.controller.api.document.parse_document` and walks
    each issue's field path back through the node tree to the line that holds it (the key's line, or
    the nearest existing parent when the field is missing). Two more costs are checked here,
    where the API's meaning is known: a fleet counts its ``spec.defaults`` once per agent
    against the node cap (expansion copies them), and every object (fleet children included)
    must fit one stored object once the store adds its metadata.

Invariants
    - All or nothing: ``load_paths`` returns every document or raises ``ManifestError`` holding
      every issue found in every file (nothing is half-loaded, so callers write nothing).
    - Duplicate keys in a mapping, non-mapping documents and YAML syntax errors are issues too.
      Empty documents (``---`` with nothing after it) are skipped.
    - Object identities are unique across one load: two documents (or a fleet child and a
      service) naming the same ``kind namespace/name`` are an error, since one apply could not
      say which wins.
    - Directories are read non-recursively, ``*.yaml``/``*.yml`` in sorted order; ``-`` is stdin.
    - ``oab.dev/v2`` documents are converted with a context per file: a local ``configFrom`` is
      relative to that file's directory (stdin: the working directory); a problem inside such a
      config file is reported with the config file's name and line.

Messages never include field values of token fields: validators do not echo them, and issues
carry no input values.

There is no time in this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import yaml

from oab.controller.api.document import parse_document
from oab.controller.api.fleet import OABFleet, expand_fleet
from oab.controller.api.intake import (
    LIMITS,
    STDIN,
    STDIN_NAME,
    STORED_METADATA_BYTES,
    ManifestError,
    ManifestIssue,
    ManifestLimits,
    decode,
    documents,
    dotted,
    dump_document,
    format_size,
    read_sources,
)
from oab.controller.api.issues import FieldIssue, InvalidDocument
from oab.controller.api.service import OABService
from oab.controller.api.v2 import ConfigFileInvalid, ConversionContext, V2Fleet
from oab.controller.base.names import ecs_name

__all__ = [
    "STDIN",
    "LoadedDocument",
    "ManifestError",
    "ManifestIssue",
    "ManifestLimits",
    "load_bytes",
    "load_paths",
    "load_text",
    "services_of",
]

#: An API object a manifest document becomes.
ApiObject = OABService | OABFleet | V2Fleet


@dataclass(frozen=True, kw_only=True)
class LoadedDocument:
    """A validated document with where it came from (``index`` is 1-based within its file)."""

    source: str
    index: int
    line: int
    obj: ApiObject
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


# ------------------------------------------------------------------------------- entry points


def load_paths(
    paths: Sequence[str],
    *,
    stdin: TextIO | BinaryIO | None = None,
    limits: ManifestLimits = LIMITS,
    context: ConversionContext | None = None,
) -> list[LoadedDocument]:
    """Load files, directories (``*.yaml``/``*.yml``, sorted) and ``-`` (stdin), all or nothing.

    ``context`` converts ``oab.dev/v2`` documents (its ``base_dir`` is replaced per file by the
    file's directory). Raises ``ManifestError`` listing every issue of every file.
    """
    docs: list[LoadedDocument] = []
    issues: list[ManifestIssue] = []
    base = context or ConversionContext()
    for source, data in read_sources(paths, stdin=stdin, issues=issues, limits=limits):
        directory = Path.cwd() if source == STDIN_NAME else Path(source).parent
        per_file = ConversionContext(
            base_dir=directory, resolve_secret=base.resolve_secret, read_file=base.read_file
        )
        try:
            docs.extend(load_bytes(data, source=source, limits=limits, context=per_file))
        except ManifestError as exc:
            issues.extend(exc.issues)
    if not issues:
        issues.extend(_identity_clashes(docs))
    if issues:
        raise ManifestError(issues)
    return docs


def load_bytes(
    data: bytes,
    *,
    source: str = STDIN_NAME,
    limits: ManifestLimits = LIMITS,
    context: ConversionContext | None = None,
) -> list[LoadedDocument]:
    """Decode (UTF-8, or UTF-16 with a BOM) and load one YAML stream; see :func:`load_text`."""
    return load_text(decode(data, source=source), source=source, limits=limits, context=context)


def load_text(
    text: str,
    *,
    source: str = STDIN_NAME,
    limits: ManifestLimits = LIMITS,
    context: ConversionContext | None = None,
) -> list[LoadedDocument]:
    """Load every document of one YAML stream; raises ``ManifestError`` on any issue.

    ``context`` converts ``oab.dev/v2`` documents (default: no local config files, no secret
    lookups)."""
    docs: list[LoadedDocument] = []
    issues: list[ManifestIssue] = []
    for index, node, data in documents(text, source=source, limits=limits, issues=issues):
        fleet_cost = _fleet_cost(data)
        if fleet_cost > limits.nodes:
            issues.append(
                ManifestIssue(
                    file=source,
                    document=index,
                    line=_line_of(node, ("spec", "agents")),
                    path="spec.agents",
                    message=(
                        f"the fleet expands to {fleet_cost:,} YAML nodes (spec.defaults is "
                        f"copied into every agent), over the {limits.nodes:,} limit"
                    ),
                    hint="split the fleet into several fleets, or shrink spec.defaults",
                )
            )
            continue
        try:
            obj = parse_document(data, context=context)
        except InvalidDocument as exc:
            issues.extend(_locate(exc.issues, node, source=source, index=index))
            continue
        except ConfigFileInvalid as exc:
            issues.append(
                ManifestIssue(
                    file=exc.source,
                    document=None,
                    line=exc.line,
                    path="",
                    message=f"{exc.message} (configFrom of {source}, document {index})",
                    hint=exc.hint,
                )
            )
            continue
        line = node.start_mark.line + 1
        doc = LoadedDocument(source=source, index=index, line=line, obj=obj, raw=data)
        too_large = _storage_issues(doc, limits=limits)
        if too_large:
            issues.extend(too_large)
            continue
        docs.append(doc)
    if issues:
        raise ManifestError(issues)
    return docs


# ------------------------------------------------------------------------------- documents


def _locate(
    issues: Iterable[FieldIssue], node: yaml.Node, *, source: str, index: int
) -> list[ManifestIssue]:
    return [
        ManifestIssue(
            file=source,
            document=index,
            line=_line_of(node, issue.path),
            path=dotted(issue.path),  # the API's form, with huge keys cut
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


def _fleet_cost(data: object) -> int:
    """Nodes of a fleet document once expanded: its defaults count once per agent, its agents
    once. Zero for anything else (the API validation says what is wrong with it)."""
    spec = data.get("spec") if isinstance(data, dict) and data.get("kind") == "OABFleet" else None
    agents = spec.get("agents") if isinstance(spec, dict) else None
    if not isinstance(agents, list):
        return 0
    defaults = spec.get("defaults") if isinstance(spec, dict) else None
    return _node_count(defaults) * len(agents) + _node_count(agents)


def _node_count(data: object) -> int:
    """Nodes of constructed data, shared (aliased) parts counted at every use; iterative."""
    count = 0
    pending = [data]
    while pending:
        item = pending.pop()
        count += 1
        if isinstance(item, dict):
            pending.extend(item.values())
            count += len(item)  # the keys
        elif isinstance(item, list):
            pending.extend(item)
    return count


def services_of(obj: ApiObject) -> list[OABService]:
    """The agents an API object stands for: itself, or a fleet's (converted) children."""
    if isinstance(obj, OABFleet):
        return expand_fleet(obj)
    if isinstance(obj, V2Fleet):
        return list(obj.children)
    return [obj]


def _objects(doc: LoadedDocument) -> list[tuple[ApiObject, str]]:
    """The document's object and, for a fleet, each child, with the field that defines it."""
    objects: list[tuple[ApiObject, str]] = [(doc.obj, "metadata.name")]
    if not isinstance(doc.obj, OABService):
        objects.extend((child, "spec.agents") for child in services_of(doc.obj))
    return objects


def _identity_clashes(docs: Sequence[LoadedDocument]) -> list[ManifestIssue]:
    """The same object twice, or two agents with one ECS name, across every loaded document."""
    issues: list[ManifestIssue] = []
    seen: dict[tuple[str, str], LoadedDocument] = {}
    ecs_names: dict[str, tuple[str, LoadedDocument]] = {}
    for doc in docs:
        for obj, path in _objects(doc):
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


def _storage_issues(doc: LoadedDocument, *, limits: ManifestLimits) -> list[ManifestIssue]:
    """Objects of ``doc`` whose stored form would not fit one stored object (so they are
    refused before any write, not halfway through an apply)."""
    issues: list[ManifestIssue] = []
    for obj, path in _objects(doc):
        size = len(dump_document(obj.to_manifest())) + STORED_METADATA_BYTES
        if size > limits.stored_bytes:
            issues.append(
                doc.issue(
                    path,
                    f"{obj.kind} {obj.key} would be stored as about {size:,} bytes, over "
                    f"the {format_size(limits.stored_bytes)} limit per stored object",
                    "make it smaller (a fleet stores each agent and the fleet separately)",
                )
            )
    return issues
