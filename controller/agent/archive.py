"""Agent state archives: hostile-archive-safe restore, denylist-filtered snapshots.

A bootstrap archive comes from a bucket the agent's owner (or a compromised agent, through an
earlier snapshot) controls, so every archive is treated as hostile. ``sanitize_archive`` reads
one (plain tar, or gzip, bzip2 or xz compressed: sniffed, never trusted from the name) and writes
a fresh, plain tar that holds only what passed validation; the agent container's ``tar -x`` never
sees the original.

Invariants of a sanitized archive (each violation raises ``UnsafeArchiveError`` naming the
member, and nothing is written to the output path):
- member paths are relative, contain no ``..``, no NUL or other control character, and stay
  under ``limits.max_path_bytes``; link targets obey the same character and length rules;
- members are regular files, directories or symlinks only; devices, FIFOs, sockets and GNU
  sparse files are refused; hard links must name an earlier regular file inside the archive and
  are re-packed as copies;
- a symlink's target is relative and, resolved the way the kernel would (relative to the link's
  directory, following every link of the archive it goes through, whatever their order in the
  archive), stays inside the root; loops and nesting deeper than Linux follows are refused;
- no member lives below a symlink of the archive, so extraction never writes through a link;
- at most ``limits.max_members`` members, each at most ``limits.max_member_bytes``, together at
  most ``limits.max_total_bytes``; a path appears once (directories may repeat);
- memory is bounded whatever the archive says: each raw header is inspected before ``tarfile``
  reads what it announces (GNU long names and PAX headers over ``limits.max_header_bytes`` are
  refused unread), and names plus extended headers share one ``limits.max_metadata_bytes``
  budget; the planner keeps one small record per member;
- owners are dropped (uid/gid 0, no names), setuid/setgid/sticky bits cleared, and the owner
  always keeps read/write (plus search on directories) so a later snapshot can read it back.

Unreadable input (not a tar, a truncated or corrupt compressed stream, bad CRC, early end of
data) raises ``CorruptArchiveError``; ``oab-agent`` exits 65 (``EX_DATAERR``) for both errors.

Snapshots go the other way: ``create_archive`` packs a HOME directory and ``filter_archive``
re-packs the tar the agent container wrote; both apply the same validation plus a ``Denylist``
of credential paths, and never include the rendered ``config.toml``. There, symlinks that leave
HOME, special files and names with control characters are dropped and counted as excluded
rather than failing the snapshot.

Time model: none; these are pure file transformations (member mtimes are carried over as-is).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal, cast

from oab.controller.base.errors import AgentError

MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB

# Credential stores that must never leave the task in a snapshot, with where each path comes
# from (the agents OpenAB ships images for, then common tools). Gitignore-like syntax, matched
# case-insensitively (see ``Denylist``); operators extend it, or keep a listed path on purpose
# with a ``!pattern``, through ``OAB_SNAPSHOT_DENYLIST`` (ops/README.md).
CREDENTIAL_STORES: Final[tuple[tuple[str, str], ...]] = (
    # -- agents
    (".claude/.credentials.json", "Claude Code: OAuth login on Linux (macOS uses the Keychain)"),
    (".codex/auth.json", "Codex CLI: ChatGPT login or API key, in $CODEX_HOME (~/.codex)"),
    (".gemini/oauth_creds.json", "Gemini CLI: Google OAuth login (core/config/storage.ts)"),
    (".gemini/mcp-oauth-tokens.json", "Gemini CLI: MCP server OAuth tokens"),
    (".gemini/a2a-oauth-tokens.json", "Gemini CLI: agent-to-agent OAuth tokens"),
    (".gemini/gemini-credentials.json", "Gemini CLI: file keychain (services/fileKeychain.ts)"),
    (".copilot/config.json", "Copilot CLI: the OAuth token, in plaintext without a keychain"),
    (".config/github-copilot/hosts.json", "GitHub Copilot (editor plugins, older CLI): token"),
    (".config/github-copilot/apps.json", "GitHub Copilot (editor plugins, older CLI): token"),
    (".local/share/opencode/auth.json", "opencode: provider API keys and OAuth logins"),
    (".local/share/opencode/mcp-auth.json", "opencode: MCP server OAuth tokens"),
    (".config/cursor/auth.json", "Cursor CLI (cursor-agent): login, $XDG_CONFIG_HOME/cursor"),
    (".cursor/auth.json", "Cursor CLI: the same file store outside XDG layouts"),
    (".local/share/kiro-cli/data.sqlite3*", "Kiro CLI: login tokens (auth_kv table) and chats"),
    (".local/share/amazon-q/data.sqlite3*", "Amazon Q Developer CLI (Kiro's predecessor): same"),
    # -- cloud and developer tools
    (".aws/credentials", "AWS CLI/SDKs: static access keys"),
    (".aws/sso/cache", "AWS CLI: IAM Identity Center tokens (also Kiro's MCP OAuth tokens)"),
    (".aws/cli/cache", "AWS CLI: cached assumed-role credentials"),
    (".aws/login/cache", "AWS CLI: `aws login` session credentials"),
    (".config/gh/hosts.yml", "GitHub CLI: OAuth token when no keyring is available"),
    (".config/gcloud", "gcloud: credentials.db, access tokens, application default creds"),
    (".azure", "Azure CLI: MSAL token cache"),
    (".docker/config.json", "Docker: registry auths"),
    (".kube/config", "kubectl: cluster tokens and client keys"),
    (".vault-token", "HashiCorp Vault CLI: the default token helper's token"),
    (".terraform.d/credentials.tfrc.json", "Terraform: `terraform login` API tokens"),
    (".npmrc", "npm: registry _authToken"),
    (".yarnrc.yml", "Yarn (berry): npmAuthToken"),
    (".pypirc", "twine/PyPI: upload tokens"),
    (".cargo/credentials.toml", "Cargo: crates.io token"),
    (".cargo/credentials", "Cargo (older): crates.io token"),
    (".gem/credentials", "RubyGems: API key"),
    (".netrc", "curl, git, pip: machine passwords"),
    ("_netrc", "curl, git on Windows-style setups: machine passwords"),
    (".git-credentials", "git credential-store: default file"),
    (".config/git/credentials", "git credential-store: XDG file"),
    (".ssh/id_*", "OpenSSH: private keys under their default names"),
    (".gnupg", "GnuPG: private keys and trust database"),
    ("*.pem", "private keys and certificates anywhere"),
    ("*.key", "private keys anywhere"),
    ("*.p12", "PKCS#12 key stores anywhere"),
    ("*.pfx", "PKCS#12 key stores anywhere"),
    (".env", "dotenv files anywhere (Gemini CLI reads its API key from ~/.gemini/.env)"),
)
# The rendered config.toml lives outside HOME; a stale copy at HOME's root never leaves either,
# and no ``!pattern`` can keep it.
ALWAYS_DENIED: Final = "/config.toml"
DEFAULT_DENYLIST: Final[tuple[str, ...]] = (ALWAYS_DENIED, *(p for p, _ in CREDENTIAL_STORES))


class UnsafeArchiveError(AgentError):
    """An archive member broke a safety rule; nothing was extracted or written."""

    reason = "UnsafeArchive"

    def __init__(self, member: str, problem: str) -> None:
        super().__init__(f"unsafe archive member {member!r}: {problem}")
        self.member = member
        self.problem = problem


class ArchiveLimitError(UnsafeArchiveError):
    """An archive exceeded a size or count cap."""

    reason = "ArchiveTooLarge"


class CorruptArchiveError(AgentError):
    """The bytes are not a readable tar archive."""

    reason = "CorruptArchive"


@dataclass(frozen=True, kw_only=True)
class ArchiveLimits:
    """Caps applied while reading an archive. Defaults fit agent state (memory, notes, small
    knowledge bases) on a Fargate task's 20 GiB ephemeral storage with room to spare.

    - ``max_member_bytes`` (512 MiB): largest single file; bigger state belongs in a data store.
    - ``max_total_bytes`` (2 GiB): sum of file sizes; also caps the downloaded object. Raising it
      costs ephemeral storage three times over (download, sanitized copy, HOME).
    - ``max_members`` (100,000): member count; bounds memory and extraction time.
    - ``max_path_bytes`` (4,096): longest member path or link target in UTF-8 bytes (PATH_MAX).
    - ``max_header_bytes`` (64 KiB): largest GNU long-name or PAX extended header. ``tarfile``
      reads one whole into memory, so this is checked on the raw header before it does; real
      headers hold a path and a few times or attributes (well under 8 KiB).
    - ``max_metadata_bytes`` (64 MiB): member paths, link targets and extended headers of the
      whole archive together; bounds the planner's memory and work however many members there
      are (100,000 members with 300-byte paths and POSIX times use about 40 MiB).
    """

    max_member_bytes: int = 512 * MiB
    max_total_bytes: int = 2 * GiB
    max_members: int = 100_000
    max_path_bytes: int = 4096
    max_header_bytes: int = 64 * 1024
    max_metadata_bytes: int = 64 * MiB

    def __post_init__(self) -> None:
        for name in (
            "max_member_bytes",
            "max_total_bytes",
            "max_members",
            "max_path_bytes",
            "max_header_bytes",
            "max_metadata_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ArchiveLimits.{name} must be positive")
        if self.max_member_bytes > self.max_total_bytes:
            raise ValueError("ArchiveLimits.max_member_bytes exceeds max_total_bytes")
        if self.max_header_bytes <= self.max_path_bytes:
            raise ValueError("ArchiveLimits.max_header_bytes must exceed max_path_bytes")


# Bytes that may not appear in a member path or link target: C0 controls (NUL included: GNU
# tar cuts a name at NUL, so "..\0/x" is ".." to it and something else to Python), DEL and C1
# controls (a newline or an escape sequence in a name forges log lines and terminal output).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _glob_regex(glob: str) -> str:
    """A shell glob as a regex where ``*`` and ``?`` stay within one path component."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := glob.find("]", i + (glob[i : i + 1] in ("!", "]")))) > 0:
            body = glob[i:end].replace("\\", "\\\\").replace("[", "\\[")
            if body.startswith("^"):
                body = "\\" + body
            elif body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body}]")
            i = end + 1
        else:
            out.append(re.escape(char))
    return "".join(out)


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = []
    for raw in patterns:
        pattern = raw.rstrip("/")
        if "/" in pattern:  # anchored at HOME; also denies everything below a match
            part = f"^{_glob_regex(pattern.lstrip('/'))}(?:/|$)"
        else:  # a name at any depth
            part = f"(?:^|/){_glob_regex(pattern)}(?:/|$)"
        try:
            re.compile(part)
        except re.error as exc:
            raise ValueError(f"invalid denylist pattern {raw!r}: {exc}") from exc
        parts.append(part)
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


@dataclass(frozen=True)
class Denylist:
    """Paths never written to a snapshot, in a gitignore-like syntax over HOME-relative paths.

    - a pattern with a ``/`` (other than a trailing one) is anchored at HOME (a leading ``/`` only
      anchors); otherwise it matches a name at any depth;
    - ``*``, ``?`` and ``[...]`` are shell globs within one path component; matching ignores
      case (``KEY.PEM`` is a ``*.pem``), so a credential cannot slip out by its spelling;
    - a pattern that matches a directory excludes everything below it;
    - ``!pattern`` keeps what it matches even when another pattern denies it (an operator's
      deliberate choice, e.g. a Kiro login kept across restarts); it can never keep
      :data:`ALWAYS_DENIED`.
    """

    patterns: tuple[str, ...] = DEFAULT_DENYLIST
    _deny: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _keep: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            body = pattern.removeprefix("!")
            if not body.strip("/") or ".." in body.split("/") or _CONTROL.search(body):
                raise ValueError(f"invalid denylist pattern {pattern!r}")
        deny = [p for p in self.patterns if not p.startswith("!")]
        keep = [p[1:] for p in self.patterns if p.startswith("!")]
        object.__setattr__(self, "_deny", _compile(deny))
        object.__setattr__(self, "_keep", _compile(keep))

    def with_extra(self, extra: Iterable[str]) -> Denylist:
        """This list plus ``extra`` patterns (blank entries ignored; ``!`` keeps)."""
        added = tuple(p.strip() for p in extra if p.strip())
        return Denylist(self.patterns + added)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (normalized, HOME-relative) or one of its parents is denied."""
        if path.lower() == ALWAYS_DENIED.lstrip("/"):
            return True
        if self._deny is None or self._deny.search(path) is None:
            return False
        return self._keep is None or self._keep.search(path) is None


@dataclass(frozen=True)
class ArchiveSummary:
    """What a sanitize/create/filter run wrote."""

    members: int
    total_bytes: int
    excluded: tuple[str, ...] = field(default=())


def _check_name(name: str, *, what: str, member: str, limits: ArchiveLimits) -> None:
    found = _CONTROL.search(name)
    if found is not None:
        char = "NUL" if found.group() == "\x00" else f"control character {found.group()!r}"
        raise UnsafeArchiveError(member, f"{char} in {what}")
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_path_bytes:
        raise ArchiveLimitError(member[:80], f"{what} longer than {limits.max_path_bytes} bytes")


def normalize_member_path(name: str, *, limits: ArchiveLimits) -> str:
    """The member's path relative to the root, or ``""`` for the root itself.

    Raises ``UnsafeArchiveError`` for absolute paths, ``..`` components, NUL and other control
    characters, and over-long paths.
    """
    _check_name(name, what="path", member=name, limits=limits)
    if name.startswith("/"):
        raise UnsafeArchiveError(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(name, "'..' in path")
    return "/".join(parts)


# ------------------------------------------------------------------------------ raw headers

_EXTENDED_TYPES: Final = frozenset(
    {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE}
    | {tarfile.SOLARIS_XHDTYPE}
)
_PAX_TYPES: Final = frozenset({tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE})
# A global PAX header applies to every later member, and tarfile copies it into each one: keep
# it small. (``git archive`` writes one of 52 bytes; GNU tar and bsdtar write none by default.)
MAX_GLOBAL_HEADER_BYTES: Final = 4096
# GNU sparse maps in PAX records ("<length> GNU.sparse.<key>=..."): tarfile would then read an
# unbounded map, block by block.
_PAX_SPARSE: Final = re.compile(rb"(?:^|\n)\d+ GNU\.sparse\.")
_DECOMPRESSION_ERRORS: Final = (EOFError, OSError, zlib.error, lzma.LZMAError)
# What may follow a tar's end marker and is still read, for the decompressor's trailer check:
# writers pad to their record size (10 KiB for GNU tar and Python, more with a large -b).
_MAX_TRAILER_BYTES: Final = 16 * MiB


def _blocks(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


class _HeaderGuard:
    """The (decompressed) archive stream as ``tarfile`` reads it, with every header checked first.

    ``tarfile`` reads a GNU long-name or PAX header's payload in one ``read`` of the size the
    raw header declares, and sparse maps block by block without limit. While ``inspecting``
    (the planning pass), this wrapper looks at each raw 512-byte header *before* ``tarfile``
    parses it: an extended header over ``limits.max_header_bytes`` (or past the archive's
    metadata budget) is refused before its payload is read, and so are sparse members and
    negative sizes. It also turns the decompressor's errors (truncated stream, bad CRC, zlib or
    lzma errors, early EOF) into ``CorruptArchiveError``. ``charge`` spends the metadata budget.
    """

    def __init__(self, inner: IO[bytes], *, label: str, limits: ArchiveLimits) -> None:
        self._inner = inner
        self._label = label
        self._limits = limits
        self._payload: bytes | None = None  # type flag of the extended header just read
        self._global_bytes = 0
        self.metadata_bytes = 0
        self.inspecting = True

    def charge(self, size: int, member: str) -> None:
        """Count ``size`` bytes of names or headers against ``limits.max_metadata_bytes``."""
        self.metadata_bytes += size
        if self.metadata_bytes > self._limits.max_metadata_bytes:
            raise ArchiveLimitError(
                member[:80],
                f"archive has more than {self._limits.max_metadata_bytes} bytes of names and"
                " extended headers",
            )

    def _read(self, size: int) -> bytes:
        try:
            return self._inner.read(size)
        except _DECOMPRESSION_ERRORS as exc:
            raise CorruptArchiveError(f"{self._label} is truncated or corrupt: {exc}") from exc

    def read(self, size: int = -1) -> bytes:
        """Read from the stream, checking headers while ``inspecting``."""
        if not self.inspecting:
            return self._read(size)
        cap = _blocks(self._limits.max_header_bytes)
        if self._payload is not None:
            kind, self._payload = self._payload, None
            if size < 0 or size > cap:
                raise ArchiveLimitError("?", f"extended header larger than {cap} bytes")
            data = self._read(size)
            if kind in _PAX_TYPES and _PAX_SPARSE.search(data):
                raise UnsafeArchiveError(_pax_path(data), "GNU sparse file (not supported)")
            return data
        if size < 0 or size > cap:
            raise ArchiveLimitError("?", f"header read of {size} bytes (limit {cap})")
        data = self._read(size)
        if size == tarfile.BLOCKSIZE:
            self._inspect(data)
        return data

    def _inspect(self, block: bytes) -> None:
        if len(block) < tarfile.BLOCKSIZE or not block.strip(b"\0"):
            return  # end of archive or truncated: tarfile says which
        typeflag = block[156:157]
        name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        size = _number(block[124:136])
        if size is None:
            return  # not a valid header: tarfile refuses it
        if size < 0:
            raise CorruptArchiveError(f"{self._label}: member {name!r} has a negative size")
        if typeflag == tarfile.GNUTYPE_SPARSE:
            raise UnsafeArchiveError(name, "GNU sparse file (not supported)")
        if typeflag not in _EXTENDED_TYPES:
            return
        if size > self._limits.max_header_bytes:
            raise ArchiveLimitError(
                name,
                f"extended header of {size} bytes (limit {self._limits.max_header_bytes})",
            )
        if typeflag == tarfile.XGLTYPE:
            self._global_bytes += size
            if self._global_bytes > MAX_GLOBAL_HEADER_BYTES:
                raise ArchiveLimitError(
                    name, f"global PAX headers over {MAX_GLOBAL_HEADER_BYTES} bytes"
                )
        self.charge(size, name)
        self._payload = typeflag

    def drain(self, limit: int) -> None:
        """Read on to the end of the stream (at most ``limit`` bytes), so that the decompressor
        checks its trailer: a bad CRC or a stream cut after the tar's end marker is corruption.
        Padding past ``limit`` (no common writer adds that much) is left unchecked."""
        left = limit
        while left > 0:
            chunk = self._read(min(left, 1024 * 1024))
            if not chunk:
                return
            left -= len(chunk)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Seek the stream (forward only in practice: a compressed stream rewinds otherwise)."""
        try:
            return self._inner.seek(offset, whence)
        except _DECOMPRESSION_ERRORS as exc:
            raise CorruptArchiveError(f"{self._label} is truncated or corrupt: {exc}") from exc

    def tell(self) -> int:
        """The stream position."""
        return self._inner.tell()


def _number(field_bytes: bytes) -> int | None:
    """A tar numeric field (octal, or GNU base-256 with the high bit set); ``None`` if invalid."""
    if field_bytes[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field_bytes[1:], "big")
        return value - 256 ** (len(field_bytes) - 1) if field_bytes[0] == 0xFF else value
    text = field_bytes.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        return None


def _pax_path(data: bytes) -> str:
    match = re.search(rb"\d+ path=([^\n]*)\n", data)
    return match.group(1).decode("utf-8", "replace")[:80] if match else "?"


_MAGIC: Final = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def _open_stream(src: Path, stack: contextlib.ExitStack) -> tuple[IO[bytes], str]:
    """The decompressed byte stream of ``src`` and its label (compression sniffed, not named)."""
    raw: IO[bytes] = stack.enter_context(src.open("rb"))
    head = raw.read(6)
    raw.seek(0)
    kind = next((name for magic, name in _MAGIC if head.startswith(magic)), "tar")
    if kind == "zstd":
        raise CorruptArchiveError(f"{src.name} is zstd-compressed: use gzip, bzip2, xz or none")
    if kind == "tar":
        return raw, kind
    stream: Any
    if kind == "gzip":
        stream = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
    elif kind == "bzip2":
        stream = stack.enter_context(bz2.BZ2File(raw, mode="rb"))
    else:
        stream = stack.enter_context(lzma.LZMAFile(raw, mode="rb"))  # noqa: SIM115 (it is)
    return cast(IO[bytes], stream), kind


# ------------------------------------------------------------------------------ symlinks

# Linux follows at most 40 links in one lookup (MAXSYMLINKS); deeper nesting is refused the same.
_MAX_LINK_DEPTH: Final = 40
# Bounds the work of resolving every link (component steps, plus the length of each resolved
# path re-entered), so that a crafted link graph cannot keep the init container busy.
_MAX_RESOLVE_STEPS: Final = 20_000_000


class _LinkError(Exception):
    """Why a link is unsafe; the same wherever the lookup started (so it is memoized)."""


class _TooDeep(_LinkError):
    """Nesting too deep; depends on where the lookup started (so it is not memoized)."""


class _Node:
    """One path component in the tree of the archive's symlinks."""

    __slots__ = ("children", "path", "problem", "real", "target")

    def __init__(self, path: str) -> None:
        self.path = path
        self.children: dict[str, _Node] = {}
        self.target: str | None = None  # set on the nodes that are symlinks
        self.real: tuple[str, ...] | None = None  # memo: where the link points, resolved
        self.problem: str | None = None  # memo: why it is unsafe (context-free reasons only)


class _LinkTree:
    """The archive's symlinks, resolved through each other the way the kernel would.

    A link's target is read relative to the link's own directory, and every component of it
    that is itself a link of the archive is followed (wherever that link came in the archive:
    extraction creates all of them before anything follows one). Components that are not links
    of the archive are taken as plain directories. A link is unsafe when its resolution steps
    above the root, loops, or nests deeper than Linux would follow; a link that goes through an
    unsafe link is unsafe too. Resolutions are memoized, so the whole graph costs one walk of
    each target (bounded by ``_MAX_RESOLVE_STEPS``).
    """

    def __init__(self, links: dict[str, str]) -> None:
        self._root = _Node("")
        self._steps = 0
        for path, target in links.items():
            node = self._root
            for part in path.split("/"):
                child = node.children.get(part)
                if child is None:
                    child = node.children[part] = _Node(f"{node.path}/{part}".lstrip("/"))
                node = child
            node.target = target

    def link_above(self, path: str) -> str | None:
        """The link of the archive ``path`` would be written through, if any."""
        node = self._root
        for part in path.split("/")[:-1]:
            child = node.children.get(part)
            if child is None:
                return None
            if child.target is not None:
                return child.path
            node = child
        return None

    def problem(self, path: str) -> str | None:
        """Why the link at ``path`` is unsafe, or ``None``."""
        node = self._root
        for part in path.split("/"):
            node = node.children[part]
        try:
            self._resolve(node, depth=0, active=set())
        except _LinkError as exc:
            return str(exc)
        return None

    def _resolve(self, node: _Node, *, depth: int, active: set[int]) -> tuple[str, ...]:
        if node.real is not None:
            return node.real
        if node.problem is not None:
            raise _LinkError(node.problem)
        if id(node) in active:
            node.problem = f"symlink loop through {node.path!r}"
            raise _LinkError(node.problem)
        if depth >= _MAX_LINK_DEPTH:
            raise _TooDeep(f"more than {_MAX_LINK_DEPTH} nested symlinks")
        active.add(id(node))
        try:
            real = self._walk(node, depth=depth, active=active)
        except _TooDeep:
            raise
        except _LinkError as exc:
            node.problem = str(exc)
            raise
        finally:
            active.discard(id(node))
        node.real = real
        return real

    def _walk(self, link: _Node, *, depth: int, active: set[int]) -> tuple[str, ...]:
        assert link.target is not None
        target = link.target
        parts: list[str] = link.path.split("/")[:-1]
        # nodes[i] is the tree node of parts[:i+1] (None once off the tree: no link below).
        nodes: list[_Node | None] = []
        node: _Node | None = self._root
        for part in parts:
            node = node.children.get(part) if node is not None else None
            nodes.append(node)
        via = ""  # the last link of the archive followed, for the message
        for part in target.split("/"):
            self._steps += 1
            if self._steps > _MAX_RESOLVE_STEPS:
                raise ArchiveLimitError(link.path, "symlinks too intricate to resolve")
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    through = f" (through the link {via!r})" if via else ""
                    raise _LinkError(f"symlink target {target!r} escapes the root{through}")
                parts.pop()
                nodes.pop()
                continue
            parent = nodes[-1] if nodes else self._root
            child = parent.children.get(part) if parent is not None else None
            if child is not None and child.target is not None:
                try:
                    real = self._resolve(child, depth=depth + 1, active=active)
                except _LinkError as exc:
                    why = f"symlink target {target!r} goes through {child.path!r}: {exc}"
                    raise type(exc)(why) from None
                self._steps += len(real)
                via = child.path
                parts = list(real)
                nodes = []
                node = self._root
                for real_part in parts:
                    node = node.children.get(real_part) if node is not None else None
                    nodes.append(node)
                continue
            parts.append(part)
            nodes.append(child)
        return tuple(parts)


def _check_link_target(path: str, target: str, *, limits: ArchiveLimits) -> None:
    if not target:
        raise UnsafeArchiveError(path, "symlink with an empty target")
    _check_name(target, what="symlink target", member=path, limits=limits)
    if target.startswith("/"):
        raise UnsafeArchiveError(path, f"symlink to absolute path {target!r}")


# ------------------------------------------------------------------------------ planning


@dataclass(slots=True)
class _Planned:
    path: str
    kind: Literal["file", "dir", "link"]
    mode: int
    mtime: float
    size: int = 0
    target: str = ""  # symlinks
    data: tarfile.TarInfo | None = None  # files: where the bytes are in the stream
    copy_of: str | None = None  # hard links: the earlier file whose bytes they repeat


@dataclass
class _Plan:
    items: list[_Planned]
    total: int
    excluded: list[str]


def _plan(
    archive: tarfile.TarFile,
    guard: _HeaderGuard,
    *,
    limits: ArchiveLimits,
    denylist: Denylist | None,
) -> _Plan:
    """Validate every member of ``archive``; return what to write.

    With a ``denylist`` (snapshot mode) special files, names with control characters, hard links
    to files not kept and unsafe symlinks are dropped and listed in ``excluded`` instead of
    refused: a live HOME may hold a socket or a link to ``/usr``, and a snapshot should not fail
    for it. Limits and the other path rules apply in both modes.
    """
    lenient = denylist is not None
    items: list[_Planned] = []
    seen: dict[str, str] = {}  # path -> kind
    files: dict[str, _Planned] = {}
    excluded: list[str] = []
    total = 0
    count = 0
    while True:
        try:
            info = archive.next()
        except tarfile.TarError as exc:
            raise CorruptArchiveError(
                f"unreadable tar archive (truncated or corrupt): {exc}"
            ) from exc
        if info is None:
            guard.drain(_MAX_TRAILER_BYTES)
            break
        # tarfile keeps every member it read; the plan keeps what it needs (no PAX maps).
        cast(Any, archive).members.clear()
        info.pax_headers = {}
        count += 1
        if count > limits.max_members:
            raise ArchiveLimitError(info.name[:80], f"more than {limits.max_members} members")
        guard.charge(len(info.name) + len(info.linkname), info.name)
        try:
            path = normalize_member_path(info.name, limits=limits)
        except ArchiveLimitError:
            raise
        except UnsafeArchiveError:
            if not lenient or not _CONTROL.search(info.name):
                raise
            excluded.append("/".join(p for p in info.name.split("/") if p not in ("", ".")))
            continue
        if not path:
            continue
        if denylist is not None and denylist.matches(path):
            excluded.append(path)
            continue
        item = _plan_member(info, path, files, limits=limits, denylist=denylist)
        if item is None:
            excluded.append(path)
            continue
        previous = seen.get(path)
        if previous is not None and not (previous == item.kind == "dir"):
            raise UnsafeArchiveError(info.name, "path appears more than once")
        seen[path] = item.kind
        if item.size > limits.max_member_bytes:
            raise ArchiveLimitError(info.name, f"larger than {limits.max_member_bytes} bytes")
        total += item.size
        if total > limits.max_total_bytes:
            raise ArchiveLimitError(info.name, f"archive over {limits.max_total_bytes} bytes")
        if item.kind == "file" and item.copy_of is None:
            files[path] = item
        items.append(item)
    items = _check_links(items, excluded, limits=limits, lenient=lenient)
    return _Plan(items, sum(i.size for i in items), excluded)


def _plan_member(
    info: tarfile.TarInfo,
    path: str,
    files: dict[str, _Planned],
    *,
    limits: ArchiveLimits,
    denylist: Denylist | None,
) -> _Planned | None:
    """One member as planned, or ``None`` to exclude it (snapshot mode only)."""
    lenient = denylist is not None
    mode, mtime = info.mode, info.mtime
    if info.isdir():
        return _Planned(path, "dir", mode, mtime)
    if info.isreg():
        return _Planned(path, "file", mode, mtime, size=info.size, data=info)
    if info.issym():
        try:
            _check_link_target(path, info.linkname, limits=limits)
        except ArchiveLimitError:
            raise
        except UnsafeArchiveError:
            if lenient:
                return None
            raise
        return _Planned(path, "link", mode, mtime, target=info.linkname)
    if info.islnk():
        try:
            target = normalize_member_path(info.linkname, limits=limits)
        except ArchiveLimitError:
            raise
        except UnsafeArchiveError:
            if lenient:
                return None
            raise
        if denylist is not None and denylist.matches(target):
            return None  # a second name for a denied file is denied too
        source = files.get(target)
        if source is None:
            if lenient:
                return None
            raise UnsafeArchiveError(
                info.name, f"hard link to {info.linkname!r}, not an earlier regular file"
            )
        return _Planned(
            path, "file", mode, mtime, size=source.size, data=source.data, copy_of=target
        )
    if lenient:
        return None
    raise UnsafeArchiveError(info.name, "device, FIFO or other special file")


def _check_links(
    items: list[_Planned], excluded: list[str], *, limits: ArchiveLimits, lenient: bool
) -> list[_Planned]:
    """Refuse (or, leniently, drop) unsafe symlinks; refuse members below a kept symlink."""
    links = {i.path: i.target for i in items if i.kind == "link"}
    if links:
        tree = _LinkTree(links)
        unsafe: set[str] = set()
        for item in items:
            if item.kind != "link":
                continue
            problem = tree.problem(item.path)
            if problem is not None:
                if not lenient:
                    raise UnsafeArchiveError(item.path, problem)
                unsafe.add(item.path)
        if unsafe:
            # A safe link never resolves through an unsafe one (it would be unsafe too), so
            # dropping these leaves every remaining resolution unchanged.
            excluded.extend(sorted(unsafe))
            items = [i for i in items if i.path not in unsafe]
            links = {p: t for p, t in links.items() if p not in unsafe}
        tree = _LinkTree(links)
        for item in items:
            above = tree.link_above(item.path)
            if above is not None:
                raise UnsafeArchiveError(item.path, f"path goes through a symlink ({above!r})")
    return items


# ------------------------------------------------------------------------------ writing


def _clean_info(item: _Planned) -> tarfile.TarInfo:
    out = tarfile.TarInfo(item.path)
    out.mtime = item.mtime
    out.uid = out.gid = 0
    out.uname = out.gname = ""
    if item.kind == "link":
        out.type = tarfile.SYMTYPE
        out.linkname = item.target
        out.mode = 0o777
    elif item.kind == "dir":
        out.type = tarfile.DIRTYPE
        out.mode = (item.mode & 0o777) | 0o700
    else:
        out.type = tarfile.REGTYPE
        out.mode = (item.mode & 0o777) | 0o600
        out.size = item.size
    return out


class _Exact:
    """Exactly ``size`` bytes of the stream from where it stands; short data is corruption."""

    def __init__(self, stream: _HeaderGuard, size: int, name: str) -> None:
        self._stream = stream
        self._left = size
        self._name = name

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); never short of what is left."""
        want = self._left if size < 0 else min(size, self._left)
        chunks: list[bytes] = []
        got = 0
        while got < want:
            chunk = self._stream.read(want - got)
            if not chunk:
                raise CorruptArchiveError(f"member {self._name!r} is truncated")
            chunks.append(chunk)
            got += len(chunk)
        self._left -= got
        return b"".join(chunks)


def _write_planned(guard: _HeaderGuard, plan: _Plan, out: Path, *, compress: bool) -> None:
    """Write ``plan`` to ``out`` atomically (temp file in the same directory + rename).

    File data is read from the stream in archive order, so a compressed stream is decompressed
    once more, front to back. A file that later hard links repeat is kept in a scratch copy
    until its last copy is written (reading it again would rewind a compressed stream).
    """
    guard.inspecting = False
    copies = Counter(i.copy_of for i in plan.items if i.copy_of is not None)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with contextlib.ExitStack() as stack:
            sink: Any = stack.enter_context(os.fdopen(fd, "wb"))
            scratch = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix=".oab-", dir=out.parent))
            )
            kept: dict[str, Path] = {}
            if compress:
                sink = stack.enter_context(gzip.GzipFile(fileobj=sink, mode="wb"))
            dst = stack.enter_context(
                tarfile.open(fileobj=sink, mode="w", format=tarfile.GNU_FORMAT)
            )
            for item in plan.items:
                info = _clean_info(item)
                if item.copy_of is not None:
                    with kept[item.copy_of].open("rb") as data:
                        dst.addfile(info, data)
                    copies[item.copy_of] -= 1
                    if not copies[item.copy_of]:
                        kept.pop(item.copy_of).unlink()
                    continue
                if item.data is None:
                    dst.addfile(info)
                    continue
                guard.seek(item.data.offset_data)
                source = _Exact(guard, item.size, item.path)
                if not copies[item.path]:
                    dst.addfile(info, source)
                    continue
                kept[item.path] = scratch / str(len(kept))
                with kept[item.path].open("w+b") as copy:
                    shutil.copyfileobj(source, copy)
                    copy.seek(0)
                    dst.addfile(info, copy)
        os.chmod(tmp, 0o644)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _wants_gzip(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz"))


def sanitize_archive(
    src: Path,
    out: Path,
    *,
    limits: ArchiveLimits | None = None,
    denylist: Denylist | None = None,
    compress: bool | None = None,
) -> ArchiveSummary:
    """Validate the archive at ``src`` and write a sanitized copy to ``out``.

    ``src`` may be a plain tar or gzip, bzip2 or xz compressed (sniffed from its first bytes).
    ``denylist`` drops matching members instead of refusing them (snapshots). ``compress``
    defaults to gzip when ``out`` ends in ``.tar.gz``/``.tgz``. Raises ``UnsafeArchiveError``
    or ``CorruptArchiveError`` (nothing written).
    """
    lim = limits or ArchiveLimits()
    with contextlib.ExitStack() as stack:
        stream, kind = _open_stream(src, stack)
        guard = _HeaderGuard(stream, label=f"{src.name} ({kind})", limits=lim)
        try:
            archive = stack.enter_context(tarfile.TarFile(fileobj=cast(IO[bytes], guard)))
        except tarfile.TarError as exc:
            raise CorruptArchiveError(f"{src.name} is not a readable tar archive: {exc}") from exc
        plan = _plan(archive, guard, limits=lim, denylist=denylist)
        gz = _wants_gzip(out) if compress is None else compress
        try:
            _write_planned(guard, plan, out, compress=gz)
        except tarfile.TarError as exc:
            raise CorruptArchiveError(f"{src.name}: {exc}") from exc
    return ArchiveSummary(len(plan.items), plan.total, tuple(plan.excluded))


def filter_archive(
    src: Path,
    out: Path,
    *,
    denylist: Denylist,
    limits: ArchiveLimits | None = None,
    compress: bool | None = None,
) -> ArchiveSummary:
    """Re-pack a snapshot tar written by the agent container, dropping denied paths."""
    return sanitize_archive(src, out, limits=limits, denylist=denylist, compress=compress)


def restore_archive(src: Path, dest: Path, limits: ArchiveLimits | None = None) -> ArchiveSummary:
    """Validate ``src`` and extract it into the directory ``dest`` (adds and overwrites only).

    Validation happens in full before the first byte is written. Extraction then goes through
    ``tarfile``'s ``data`` filter as a second line of defence: it also refuses to write through
    a symlink that already exists under ``dest`` and points outside it.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".oab-restore-", dir=dest.parent) as scratch:
        clean = Path(scratch) / "clean.tar"
        summary = sanitize_archive(src, clean, limits=limits, compress=False)
        with tarfile.open(clean, mode="r") as archive:
            try:
                archive.extractall(dest, filter="data")
            except tarfile.FilterError as exc:
                raise UnsafeArchiveError(str(getattr(exc, "tarinfo", "?")), str(exc)) from exc
    return summary


def _walk(home: Path, denylist: Denylist, excluded: list[str]) -> Iterator[str]:
    """Entries under ``home`` to archive (symlinks not followed), parents before children.

    Denied paths are appended to ``excluded`` and denied directories are not descended into.
    Sockets, FIFOs and devices are skipped: a live HOME may hold an agent's socket.
    """
    for dirpath, dirnames, filenames in os.walk(home, followlinks=False):
        rel_dir = Path(dirpath).relative_to(home).as_posix()
        kept_dirs = []
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if denylist.matches(rel):
                excluded.append(rel)
                continue
            try:
                mode = os.lstat(os.path.join(dirpath, name)).st_mode
            except FileNotFoundError:
                continue  # removed while we walked: a live HOME changes under us
            if stat.S_ISDIR(mode):
                kept_dirs.append(name)
            elif not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                continue
            yield rel
        dirnames[:] = sorted(d for d in dirnames if d in kept_dirs)


def create_archive(
    home: Path,
    out: Path,
    denylist: Denylist,
    *,
    limits: ArchiveLimits | None = None,
    compress: bool | None = None,
) -> ArchiveSummary:
    """Snapshot the directory ``home`` into ``out`` (sockets and other special files skipped).

    Equivalent to ``tar -cf - -C home .`` followed by ``filter_archive``: the result passes the
    same validation as a restore, so ``restore_archive(create_archive(h))`` reproduces ``h``.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    excluded: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".oab-snap-", dir=out.parent) as scratch:
        raw = Path(scratch) / "raw.tar"
        with tarfile.open(raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for rel in _walk(home, denylist, excluded):
                try:
                    tar.add(home / rel, arcname=rel, recursive=False)
                except FileNotFoundError:
                    continue
        summary = sanitize_archive(raw, out, limits=limits, denylist=denylist, compress=compress)
    # The walk dropped denied paths before tar saw them; the sanitizer dropped the rest (links
    # leaving HOME, odd names): both count as excluded.
    return ArchiveSummary(summary.members, summary.total_bytes, (*excluded, *summary.excluded))
