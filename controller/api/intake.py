"""Manifest intake: bytes and YAML of every manifest, read from a file or from the store.

Design
    Every manifest text is untrusted: files and standard input from users, and stored objects
    (anyone who can write the bucket can plant one). This module is the one place both are
    parsed, by one capped loader, in three steps; each refuses with a :class:`ManifestIssue`
    (file, document, line, field path, fix), and the first refusal in a stream ends that stream:

    1. **Bytes.** Input is bounded before it is read (:data:`MAX_FILE_BYTES` per file or stdin,
       :data:`MAX_LOAD_BYTES` per load, :data:`MAX_STORED_BYTES` per stored object) and decoded
       strictly: UTF-8 (an optional BOM) or UTF-16 with its BOM. Characters YAML cannot carry
       (raw NUL and other C0/C1 controls, lone surrogates) are refused with their line.
    2. **Composition, capped.** Events (libyaml's parser when present, PyYAML's otherwise) are
       composed into nodes by :class:`_CappedComposer`, which keeps, per stream, the number of
       nodes and of scalar characters *as if every alias were expanded*: an alias costs its
       target's whole expanded size, memoized per anchored node, so the count is exact and costs
       one step per event. It also tracks nesting depth (aliases included), refuses an alias to
       a node still being composed (a recursive alias), and stops at the first cap crossed,
       before anything is constructed: an alias bomb costs its text, never its expansion.
    3. **Scalars and keys.** Only JSON's types may appear: text, integers within 64 bits,
       floats, booleans, null, lists, and mappings with text keys (duplicates refused). Explicit
       tags (``!!python/object``, ``!!binary``, ``!!set``, ``!!timestamp``, custom ``!tags``) are
       refused; a plain timestamp stays text, as Kubernetes reads YAML. Escaped control
       characters and surrogate escapes (``"\\ud800"``) are refused.

    Then data is constructed with PyYAML's safe constructor from the checked node tree (whose
    expanded size the caps bound). :mod:`oab.controller.api.manifests` validates it as API objects;
    :mod:`oab.controller.adapters.store` reads stored objects with :func:`load_stored` and writes
    them with :func:`dump_document`, so nothing it keeps can exceed what this module accepts.

Invariants
    - No input makes this module raise anything but :class:`ManifestError`, and none costs more
      than the caps: memory is bounded by the bytes read plus :data:`MAX_NODES` nodes.
    - Issues carry no scalar values (a refused value is named by its field path and line), so a
      token pasted in the wrong place is never echoed.

There is no time in this module.
"""

from __future__ import annotations

import codecs
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, NamedTuple, TextIO

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from oab.controller.base.errors import InvalidInput

__all__ = [
    "INT_RANGE",
    "LIMITS",
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_LOAD_BYTES",
    "MAX_NODES",
    "MAX_STORED_BYTES",
    "STDIN",
    "STDIN_NAME",
    "STORED_METADATA_BYTES",
    "ManifestError",
    "ManifestIssue",
    "ManifestLimits",
    "YamlDocument",
    "decode",
    "documents",
    "dotted",
    "dump_document",
    "format_size",
    "load_stored",
    "read_sources",
]

# ------------------------------------------------------------------------------------ limits
# The one place where the intake limits live (README: "Manifest limits and the fuzz").

#: Bytes of one manifest file, or of standard input. Larger input is refused unread.
MAX_FILE_BYTES: Final = 1 << 20
#: Bytes read by one load: every file, directory entry and stdin of one command together.
MAX_LOAD_BYTES: Final = 16 << 20
#: Bytes of one stored object (the S3 body), checked when written and before it is read.
MAX_STORED_BYTES: Final = 1 << 20
#: What the store adds to a document (uid, generation, timestamps, finalizer), at most.
STORED_METADATA_BYTES: Final = 1 << 10
#: YAML nodes in one stream (file, stdin or stored object), every alias expanded.
MAX_NODES: Final = 100_000
#: Characters of all scalars (keys included) in one stream, every alias expanded.
MAX_CHARS: Final = 2 << 20
#: Nesting levels of collections and scalars in one document, aliases included.
MAX_DEPTH: Final = 64
#: YAML integers must fit in a signed 64-bit integer (as in JSON readers and DynamoDB).
INT_RANGE: Final = range(-(2**63), 2**63)


@dataclass(frozen=True, kw_only=True)
class ManifestLimits:
    """The intake caps (defaults: the module constants above, which the README lists).

    - ``file_bytes`` (1 MiB): one file or stdin. Manifests are small (an agent ~2 KB, a fleet of
      1,000 agents 20-200 KB); the cap keeps a mistaken ``-f big.log`` from being read at all.
    - ``load_bytes`` (16 MiB): all sources of one command (``-f DIR`` of many files).
    - ``stored_bytes`` (1 MiB): one stored object; every reader of the store refuses a larger
      object from its size alone, before reading its body.
    - ``nodes`` (100,000) / ``chars`` (2 MiB): one stream with every alias expanded. They bound
      what a small text can cost (an 800-byte alias bomb expands to millions of nodes) and what
      the store would be asked to hold. Raising them costs memory and time: composing costs
      ~300 bytes and ~5 us per node (measured: 100,000 nodes, 31 MB, 0.5 s).
    - ``depth`` (64): nesting levels; deeper data is refused before anything recurses on it.
    """

    file_bytes: int = MAX_FILE_BYTES
    load_bytes: int = MAX_LOAD_BYTES
    stored_bytes: int = MAX_STORED_BYTES
    nodes: int = MAX_NODES
    chars: int = MAX_CHARS
    depth: int = MAX_DEPTH

    def __post_init__(self) -> None:
        for name in ("file_bytes", "load_bytes", "stored_bytes", "nodes", "chars", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"ManifestLimits.{name} must be >= 1")
        if self.depth > 200:
            # Each level costs a few Python frames in the composer and the constructor.
            raise ValueError("ManifestLimits.depth must be <= 200 (Python's recursion limit)")


#: The limits every caller uses unless a test passes smaller ones.
LIMITS: Final = ManifestLimits()

#: The path that means "read standard input", and its name in messages.
STDIN = "-"
STDIN_NAME = "<stdin>"
_SUFFIXES = (".yaml", ".yml")


# ---------------------------------------------------------------------------------- issues


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
class ManifestError(InvalidInput):
    """Manifests failed to load; ``issues`` lists every problem. Not retryable."""

    reason = "InvalidManifest"
    issues: list[ManifestIssue] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


class YamlDocument(NamedTuple):
    """One non-empty document of a stream: its 1-based number, checked node tree and data."""

    number: int
    node: yaml.Node
    data: Any


# ------------------------------------------------------------------------------- reading bytes


def read_sources(
    paths: Sequence[str],
    *,
    stdin: TextIO | BinaryIO | None,
    issues: list[ManifestIssue],
    limits: ManifestLimits,
) -> Iterator[tuple[str, bytes]]:
    """``(source name, bytes)`` of files, directories (``*.yaml``/``*.yml``, sorted) and ``-``
    (stdin), each read only up to its cap; what cannot be read or is too large goes to
    ``issues`` instead, and reading stops at the load cap."""
    if not paths:
        issues.append(
            ManifestIssue(
                file="", document=None, line=None, path="", message="no manifest paths given"
            )
        )
    budget = limits.load_bytes
    for source, read in _sources(paths, stdin=stdin, issues=issues):
        try:
            data = read(min(limits.file_bytes, budget) + 1)
        except (OSError, UnicodeError) as exc:
            issues.append(_file_issue(source, f"cannot read: {exc}"))
            continue
        if len(data) > limits.file_bytes:
            issues.append(_too_large(source, len(data), limits.file_bytes, stored=False))
            continue
        if len(data) > budget:
            issues.append(
                _file_issue(
                    source,
                    f"this command would read more than {format_size(limits.load_bytes)} of "
                    "manifests (the limit per load)",
                    "apply the files in several commands",
                )
            )
            return
        budget -= len(data)
        yield source, data


def _sources(
    paths: Sequence[str], *, stdin: TextIO | BinaryIO | None, issues: list[ManifestIssue]
) -> Iterator[tuple[str, Any]]:
    """``(source name, read(n) -> bytes)`` for every file named, in order."""
    for raw in paths:
        if raw == STDIN:
            yield STDIN_NAME, _stream_reader(stdin if stdin is not None else sys.stdin)
            continue
        path = Path(raw)
        try:
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
                if not files:
                    issues.append(_file_issue(raw, "directory holds no *.yaml or *.yml files"))
            elif path.is_file():
                files = [path]
            else:
                issues.append(_file_issue(raw, "no such file or directory"))
                continue
        except OSError as exc:
            issues.append(_file_issue(raw, f"cannot read: {exc}"))
            continue
        for file in files:
            yield str(file), _file_reader(file)


def _file_reader(path: Path) -> Any:
    def read(limit: int) -> bytes:
        with path.open("rb") as handle:
            return handle.read(limit)

    return read


def _stream_reader(stream: TextIO | BinaryIO) -> Any:
    """Read at most ``limit`` bytes: the binary buffer of a real stdin, or text re-encoded."""

    def read(limit: int) -> bytes:
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            data: bytes = buffer.read(limit)
            return data
        chunk = stream.read(limit)
        if isinstance(chunk, bytes):
            return chunk
        # A text stream (tests, an embedding program): bytes as UTF-8, lone surrogates kept
        # so that decoding refuses them with their line like any other input.
        return chunk.encode("utf-8", "surrogatepass")[:limit]

    return read


def _file_issue(file: str, message: str, hint: str | None = None) -> ManifestIssue:
    return ManifestIssue(file=file, document=None, line=None, path="", message=message, hint=hint)


def format_size(n: int) -> str:
    """``1 MiB`` for whole mebibytes, ``1,234 bytes`` otherwise."""
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n:,} bytes"


def _too_large(source: str, size: int, limit: int, *, stored: bool) -> ManifestIssue:
    if stored:
        message = f"the stored object is {size:,} bytes, over the {format_size(limit)} limit"
        hint = "apply a corrected manifest with `oabctl apply` to replace it"
    else:
        message = f"larger than {format_size(limit)} (the limit per manifest file)"
        hint = "split it into several files"
    return ManifestIssue(file=source, document=None, line=None, path="", message=message, hint=hint)


_BOMS: Final = (
    (codecs.BOM_UTF32_LE, None),
    (codecs.BOM_UTF32_BE, None),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode(data: bytes, *, source: str) -> str:
    """Text of ``data``: UTF-8 (optional BOM) or UTF-16 with a BOM, strictly."""
    encoding: str | None = "utf-8"
    for bom, codec in _BOMS:  # UTF-32's BOM starts like UTF-16's: test it first
        if data.startswith(bom):
            encoding = codec
            break
    if encoding is None:
        raise ManifestError(
            [_file_issue(source, "the file is UTF-32, which is not accepted", "save it as UTF-8")]
        )
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        prefix = data[: exc.start].decode(encoding, errors="replace")
        line, column = _line_column(prefix, len(prefix))
        prefix = prefix[: len(prefix) - column + 1]  # whole lines: they parse as YAML
        name = "UTF-16" if encoding == "utf-16" else "UTF-8"
        raise ManifestError(
            [
                ManifestIssue(
                    file=source,
                    document=_document_at(prefix),
                    line=line,
                    path="",
                    message=(
                        f"not valid {name} at column {column} "
                        f"(byte 0x{data[exc.start]:02x}: {exc.reason})"
                    ),
                    hint="save the file as UTF-8",
                )
            ]
        ) from None


#: What YAML streams may contain (YAML 1.1, as PyYAML's reader checks it).
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
#: Line breaks as YAML (and PyYAML's marks) count them.
_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def _line_column(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of ``pos`` in ``text``."""
    line = 1
    start = 0
    for match in _BREAK.finditer(text, 0, pos):
        line += 1
        start = match.end()
    return line, pos - start + 1


def _document_at(prefix: str) -> int | None:
    """Which document (1-based) the end of ``prefix`` is in; None when that cannot be told."""
    count = 0
    try:
        for event in yaml.parse(prefix, Loader=_EVENT_LOADER):
            if isinstance(event, yaml.DocumentStartEvent):
                count += 1
    except yaml.YAMLError:
        return None
    return max(count, 1)


def _check_printable(text: str, *, source: str) -> None:
    match = _NON_PRINTABLE.search(text)
    if match is None:
        return
    char = match.group()
    line, column = _line_column(text, match.start())
    line_start = match.start() - column + 1
    raise ManifestError(
        [
            ManifestIssue(
                file=source,
                document=_document_at(text[:line_start]),
                line=line,
                path="",
                message=f"{_describe_char(char)} at column {column} cannot appear in YAML",
                hint="remove it (a manifest is text)",
            )
        ]
    )


def _describe_char(char: str) -> str:
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return f"the lone surrogate U+{code:04X}"
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"the control character U+{code:04X}"
    return f"the character U+{code:04X}"


# ----------------------------------------------------------------------------- capped loading

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL = f"{_TAG}str", f"{_TAG}int", f"{_TAG}float", f"{_TAG}bool"
_MERGE = f"{_TAG}merge"
_SCALAR_TAGS: Final = frozenset({_STR, _INT, _FLOAT, _BOOL, f"{_TAG}null"})
_COLLECTION_TAGS: Final[Mapping[type[yaml.Node], str]] = {
    yaml.SequenceNode: f"{_TAG}seq",
    yaml.MappingNode: f"{_TAG}map",
}
#: Longest integer literal read (``0b`` + 64 digits, a sign and some ``_`` separators).
_MAX_INT_LITERAL = 80
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_JSON = (
    "manifests hold only text, numbers, booleans, null, lists and mappings (quote text that "
    "YAML would read as something else)"
)


class _Refused(Exception):
    """A cap crossed or a forbidden construct, at ``mark`` under field ``path``."""

    def __init__(self, mark: Any, path: Sequence[str | int], message: str, hint: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.path = tuple(path)
        self.message = message
        self.hint = hint


@dataclass
class _Cost:
    """What a subtree costs with its aliases expanded."""

    nodes: int = 0
    chars: int = 0
    height: int = 0

    def add(self, other: _Cost) -> None:
        self.nodes += other.nodes
        self.chars += other.chars
        self.height = max(self.height, other.height)


class _Resolver(Resolver):
    """YAML 1.1's implicit types minus timestamps, which stay text (as Kubernetes reads them)."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != f"{_TAG}timestamp"]
        for first, resolvers in Resolver.yaml_implicit_resolvers.items()
    }


class _CappedComposer(Composer):
    """PyYAML's composer with the caps and checks of the module doc (steps 2 and 3).

    Costs are kept per stream (``_nodes``, ``_chars``) and per anchored node (``_costs``, reset
    with the anchors at each document). Every refusal raises :class:`_Refused`.
    """

    _limits: ManifestLimits
    # Provided by the parser half of each loader (PyYAML's Parser or libyaml's CParser).
    peek_event: Any
    construct_yaml_int: Any
    construct_yaml_float: Any

    def _start(self, limits: ManifestLimits) -> None:
        self._limits = limits
        self._nodes = 0
        self._chars = 0
        self._depth = 0
        self._path: list[str | int] = []
        self._frames: list[_Cost] = []
        self._costs: dict[yaml.Node, _Cost] = {}

    def compose_document(self) -> yaml.Node | None:
        self._costs = {}
        node: yaml.Node | None = super().compose_document()
        return node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        is_key = isinstance(parent, yaml.MappingNode) and index is None
        step: str | int | None = None
        if isinstance(index, int):
            step = index
        elif isinstance(index, yaml.ScalarNode):
            step = str(index.value)
        if step is not None:
            self._path.append(step)
        try:
            node: yaml.Node
            if isinstance(event, yaml.AliasEvent):
                node = self._compose_alias(event, parent, index)
            else:
                node = self._compose_counted(event, parent, index, is_key=is_key)
            if is_key:
                self._check_key(node, event)
            return node
        finally:
            if step is not None:
                self._path.pop()

    def _compose_alias(
        self, event: yaml.AliasEvent, parent: yaml.Node | None, index: Any
    ) -> yaml.Node:
        target = self.anchors.get(event.anchor)
        if target is not None:
            cost = self._costs.get(target)
            if cost is None:
                raise self._refuse(
                    event.start_mark,
                    f"the alias *{event.anchor} is inside the node it refers to (a recursive "
                    "alias)",
                    "data cannot contain itself; remove the alias",
                )
            if self._depth + cost.height > self._limits.depth:
                raise self._too_deep(event.start_mark)
            self._charge(cost.nodes, cost.chars, event.start_mark)
            if self._frames:
                self._frames[-1].add(cost)
        # Consumes the event; an undefined alias is PyYAML's ComposerError.
        node = super().compose_node(parent, index)
        assert node is not None  # an alias always resolves to a node
        return node

    def _compose_counted(
        self, event: yaml.Event, parent: yaml.Node | None, index: Any, *, is_key: bool
    ) -> yaml.Node:
        self._depth += 1
        if self._depth > self._limits.depth:
            raise self._too_deep(event.start_mark)
        self._frames.append(_Cost())
        try:
            composed = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            inner = self._frames.pop()
        assert composed is not None  # the peeked event starts a node
        node: yaml.Node = composed
        if isinstance(node, yaml.ScalarNode):
            self._check_scalar(node, event, is_key=is_key)
            cost = _Cost(nodes=1, chars=len(node.value), height=1)
            self._charge(1, cost.chars, event.start_mark)
        else:
            if node.tag != _COLLECTION_TAGS.get(type(node), ""):
                raise self._tag_refused(event, node)
            cost = _Cost(nodes=1 + inner.nodes, chars=inner.chars, height=1 + inner.height)
            self._charge(1, 0, event.start_mark)
        if getattr(event, "anchor", None) is not None:
            self._costs[node] = cost
        if self._frames:
            self._frames[-1].add(cost)
        return node

    def _charge(self, nodes: int, chars: int, mark: Any) -> None:
        self._nodes += nodes
        self._chars += chars
        hint = (
            "the whole stream counts, with every alias expanded; split it into several "
            "files, or stop repeating large blocks with aliases"
        )
        if self._nodes > self._limits.nodes:
            raise self._refuse(
                mark, f"more than {self._limits.nodes:,} YAML nodes (the limit per file)", hint
            )
        if self._chars > self._limits.chars:
            raise self._refuse(
                mark,
                f"more than {format_size(self._limits.chars)} of text in values and keys "
                "(the limit per file)",
                hint,
            )

    def _check_scalar(self, node: yaml.ScalarNode, event: yaml.Event, *, is_key: bool) -> None:
        value: str = node.value
        if _SURROGATE.search(value):
            # libyaml already refuses such escapes; PyYAML's scanner lets them through.
            raise self._refuse(
                event.start_mark,
                "a surrogate escape (\\ud800-\\udfff) cannot be stored as UTF-8",
                "write the character itself, or its \\U0001F600-style escape",
            )
        control = _CONTROL.search(value)
        if control is not None:
            raise self._refuse(
                event.start_mark,
                f"{_describe_char(control.group())} is not allowed in a "
                + ("key" if is_key else "value"),
                "remove it (tabs and line breaks are fine)",
            )
        if node.tag == _MERGE and is_key:
            return
        if node.tag not in _SCALAR_TAGS:
            raise self._tag_refused(event, node)
        if node.tag == _INT:
            self._check_int(node, event)
        elif node.tag == _FLOAT:
            try:
                self.construct_yaml_float(node)
            except ValueError:
                raise self._refuse(event.start_mark, "not a valid number", "quote it") from None
        elif node.tag == _BOOL and node.value.lower() not in SafeConstructor.bool_values:
            # Only an explicit !!bool can get here (the resolver picks bool for known words).
            raise self._refuse(event.start_mark, "not a valid boolean", "write true or false")

    def _check_int(self, node: yaml.ScalarNode, event: yaml.Event) -> None:
        if len(node.value) > _MAX_INT_LITERAL:
            number: int | None = None
        else:
            try:
                number = self.construct_yaml_int(node)
            except ValueError:
                raise self._refuse(event.start_mark, "not a valid integer", "quote it") from None
        if number is None or number not in INT_RANGE:
            raise self._refuse(
                event.start_mark,
                "an integer outside the 64-bit range",
                "quote it if it is text; numbers must be between -2^63 and 2^63-1",
            )

    def _check_key(self, node: yaml.Node, event: yaml.Event) -> None:
        if not isinstance(node, yaml.ScalarNode):
            raise self._refuse(
                event.start_mark,
                "a mapping key must be text, not a list or a mapping",
                "use a plain text key",
            )
        if node.tag not in (_STR, _MERGE):
            kind = node.tag.removeprefix(_TAG)
            raise self._refuse(
                event.start_mark,
                f"the key {node.value!r} is read as YAML type {kind!r}, not text",
                f'quote it: "{node.value}"',
            )

    def _tag_refused(self, event: yaml.Event, node: yaml.Node) -> _Refused:
        explicit = getattr(event, "tag", None) not in (None, "!")
        tag = node.tag.replace(_TAG, "!!")
        if explicit:
            return self._refuse(event.start_mark, f"the YAML tag {tag} is not allowed", _NOT_JSON)
        return self._refuse(
            event.start_mark, f"this plain value is read as YAML type {tag!r}", _NOT_JSON
        )

    def _too_deep(self, mark: Any) -> _Refused:
        return self._refuse(
            mark,
            f"nested deeper than {self._limits.depth} levels (the limit)",
            "flatten the data; aliases count at the depth where they are used",
        )

    def _refuse(self, mark: Any, message: str, hint: str) -> _Refused:
        return _Refused(mark, self._path, message, hint)


class _PyLoader(_CappedComposer, Reader, Scanner, Parser, SafeConstructor, _Resolver):
    """The capped loader on PyYAML's pure-Python reader, scanner and parser."""

    def __init__(self, text: str, limits: ManifestLimits) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        _Resolver.__init__(self)
        self._start(limits)


_Loader: Any = _PyLoader
_EVENT_LOADER: Any = yaml.SafeLoader
_Dumper: Any = yaml.SafeDumper
if yaml.__with_libyaml__:  # pragma: no branch - the wheels ship libyaml
    from yaml._yaml import CParser as _CParser

    class _CLoader(_CappedComposer, _CParser, SafeConstructor, _Resolver):
        """The capped loader on libyaml's C parser (the composer, and so the caps, stay here)."""

        def __init__(self, text: str, limits: ManifestLimits) -> None:
            _CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            _Resolver.__init__(self)
            self._start(limits)

    _Loader = _CLoader
    _EVENT_LOADER = yaml.CSafeLoader
    _Dumper = yaml.CSafeDumper


def documents(
    text: str, *, source: str, limits: ManifestLimits, issues: list[ManifestIssue]
) -> Iterator[YamlDocument]:
    """Each non-empty document of ``text``, checked and constructed.

    A document with duplicate keys is skipped with an issue each; the first refusal or YAML
    error goes to ``issues`` and ends the stream.
    """
    try:
        _check_printable(text, source=source)
    except ManifestError as exc:
        issues.extend(exc.issues)
        return
    loader = _Loader(text, limits)
    index = 0
    try:
        while loader.check_node():
            index += 1
            node = loader.get_node()
            if node is None or _is_empty(node):
                continue
            dupes = list(_duplicate_keys(node, ()))
            for path, dup_line in dupes:
                issues.append(
                    ManifestIssue(
                        file=source,
                        document=index,
                        line=dup_line,
                        path=dotted(path),
                        message="duplicate key",
                        hint="a key may appear once per mapping; remove one of them",
                    )
                )
            if not dupes:
                yield YamlDocument(index, node, loader.construct_document(node))
    except _Refused as exc:
        issues.append(
            ManifestIssue(
                file=source,
                document=max(index, 1),
                line=exc.mark.line + 1 if exc.mark is not None else None,
                path=dotted(exc.path),
                message=exc.message,
                hint=exc.hint,
            )
        )
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


# ---------------------------------------------------------------------------- stored objects


def load_stored(body: bytes, *, source: str, limits: ManifestLimits = LIMITS) -> dict[str, Any]:
    """One stored document as data, under the same caps as any manifest; ``ManifestError`` if not.

    ``body`` is refused from its length alone when over ``limits.stored_bytes``. The document
    must be a single mapping; it is not validated against the API (a tombstone, or a document
    an upgrade no longer accepts, is still readable), and a duplicate key is an issue.
    """
    if len(body) > limits.stored_bytes:
        raise ManifestError([_too_large(source, len(body), limits.stored_bytes, stored=True)])
    text = decode(body, source=source)
    issues: list[ManifestIssue] = []
    found = list(documents(text, source=source, limits=limits, issues=issues))
    if not issues and len(found) != 1:
        message = (
            "the stored object is empty" if not found else "a stored object holds one document"
        )
        issues.append(
            ManifestIssue(file=source, document=None, line=None, path="", message=message)
        )
    elif not issues and not isinstance(found[0].data, dict):
        issues.append(
            ManifestIssue(
                file=source,
                document=found[0].number,
                line=found[0].node.start_mark.line + 1,
                path="",
                message="a stored object must be a mapping",
            )
        )
    if issues:
        raise ManifestError(issues)
    data: dict[str, Any] = found[0].data
    return data


def dump_document(document: Mapping[str, Any]) -> bytes:
    """The stored form of a document (YAML, keys in the order given): what the store writes."""
    text: str = yaml.dump(dict(document), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return text.encode()


# ---------------------------------------------------------------------------------- helpers


#: Longest key shown in a field path: a message never echoes a huge key back whole.
_SHOWN_KEY = 64


def dotted(path: Sequence[str | int]) -> str:
    """``spec.config.discord.allowed_channels[0]`` (the form of API field paths); ``""`` for
    the document itself. Keys longer than 64 characters are cut (``abc...``)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        key = part if len(part) <= _SHOWN_KEY else part[: _SHOWN_KEY - 3] + "..."
        out += f".{key}" if out else key
    return out


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
