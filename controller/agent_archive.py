"""Agent state archives: hostile-archive-safe restore, denylist-filtered snapshots.

A bootstrap archive comes from a bucket the agent's owner (or a compromised agent, through an
earlier snapshot) controls, so every archive is treated as hostile. ``sanitize_archive`` reads
one (plain tar or any compression ``tarfile`` knows) and writes a fresh, plain tar that holds only
what passed validation; the agent container's ``tar -x`` never sees the original.

Invariants of a sanitized archive (each violation raises ``UnsafeArchiveError`` naming the
member, and nothing is written to the output path):
- member paths are relative, contain no ``..``, no NUL, and stay under ``limits.max_path_bytes``;
- members are regular files, directories or symlinks only; devices, FIFOs and sockets are refused;
  hard links must name an earlier regular file inside the archive and are re-packed as copies;
- a symlink's target is relative and, resolved against the link's directory, stays inside the
  root; a ``..`` in a target may not step back out of another symlink of the archive (lexical
  resolution would be wrong there);
- no member lives below a symlink of the archive, so extraction never writes through a link;
- at most ``limits.max_members`` members, each at most ``limits.max_member_bytes``, together at
  most ``limits.max_total_bytes``; a path appears once (directories may repeat);
- owners are dropped (uid/gid 0, no names), setuid/setgid/sticky bits cleared, and the owner
  always keeps read/write (plus search on directories) so a later snapshot can read it back.

Snapshots go the other way: ``create_archive`` packs a HOME directory and ``filter_archive``
re-packs the tar the agent container wrote; both apply the same validation plus a ``Denylist``
of credential paths, and never include the rendered ``config.toml``.

Time model: none; these are pure file transformations (member mtimes are carried over as-is).
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from oab.controller.errors import OabError

MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB

# Credential files that must never leave the task in a snapshot, in gitignore-like syntax (see
# ``Denylist``). The list covers the agent CLIs OpenAB runs and the usual developer tool
# credentials; operators extend it with ``OAB_SNAPSHOT_DENYLIST`` (ops/README.md).
DEFAULT_DENYLIST: Final[tuple[str, ...]] = (
    "/config.toml",
    ".aws/credentials",
    ".aws/sso/cache",
    ".aws/cli/cache",
    ".ssh/id_*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    ".docker/config.json",
    ".kube/config",
    ".gnupg",
    ".config/gh/hosts.yml",
    ".config/gcloud",
    ".azure",
    ".claude/.credentials.json",
    ".codex/auth.json",
    ".gemini/oauth_creds.json",
    ".config/github-copilot/hosts.json",
    ".config/github-copilot/apps.json",
    ".local/share/opencode/auth.json",
    ".env",
)


class AgentError(OabError):
    """Base of the agent start-up errors (``oab-agent``); part of the controller's hierarchy."""

    retryable = False
    reason = "AgentError"


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
    - ``max_path_bytes`` (4,096): longest member path in UTF-8 bytes (PATH_MAX on Linux).
    """

    max_member_bytes: int = 512 * MiB
    max_total_bytes: int = 2 * GiB
    max_members: int = 100_000
    max_path_bytes: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_member_bytes", "max_total_bytes", "max_members", "max_path_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ArchiveLimits.{name} must be positive")
        if self.max_member_bytes > self.max_total_bytes:
            raise ValueError("ArchiveLimits.max_member_bytes exceeds max_total_bytes")


@dataclass(frozen=True)
class Denylist:
    """Paths never written to a snapshot, in a gitignore-like syntax over HOME-relative paths.

    - a pattern with a ``/`` (other than a trailing one) is anchored at HOME (a leading ``/`` only
      anchors); otherwise it matches the last component at any depth;
    - ``*``, ``?`` and ``[...]`` are shell globs (``fnmatch``), matched case-sensitively;
    - a pattern that matches a directory excludes everything below it.
    """

    patterns: tuple[str, ...] = DEFAULT_DENYLIST

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            if not pattern.strip("/") or ".." in pattern.split("/"):
                raise ValueError(f"invalid denylist pattern {pattern!r}")

    def with_extra(self, extra: Iterable[str]) -> Denylist:
        """This list plus ``extra`` patterns (blank entries ignored)."""
        added = tuple(p.strip() for p in extra if p.strip())
        return Denylist(self.patterns + added)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (normalized, HOME-relative) or one of its parents is denied."""
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            for raw in self.patterns:
                pattern = raw.rstrip("/")
                if "/" in pattern:
                    if fnmatch.fnmatchcase(prefix, pattern.lstrip("/")):
                        return True
                elif fnmatch.fnmatchcase(parts[i - 1], pattern):
                    return True
        return False


@dataclass(frozen=True)
class ArchiveSummary:
    """What a sanitize/create/filter run wrote."""

    members: int
    total_bytes: int
    excluded: tuple[str, ...] = field(default=())


def normalize_member_path(name: str, *, limits: ArchiveLimits) -> str:
    """The member's path relative to the root, or ``""`` for the root itself.

    Raises ``UnsafeArchiveError`` for absolute paths, ``..`` components, NUL bytes and over-long
    paths.
    """
    if "\x00" in name:
        raise UnsafeArchiveError(name, "NUL byte in path")
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_path_bytes:
        raise ArchiveLimitError(name[:80], f"path longer than {limits.max_path_bytes} bytes")
    if name.startswith("/"):
        raise UnsafeArchiveError(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(name, "'..' in path")
    return "/".join(parts)


def _check_symlink_target(path: str, target: str, symlinks: set[str]) -> None:
    if not target:
        raise UnsafeArchiveError(path, "symlink with an empty target")
    if target.startswith("/"):
        raise UnsafeArchiveError(path, f"symlink to absolute path {target!r}")
    stack = path.split("/")[:-1]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                raise UnsafeArchiveError(path, f"symlink target {target!r} escapes the root")
            # Stepping back out of a symlink lands next to the link's *target*, not here.
            if "/".join(stack) in symlinks:
                raise UnsafeArchiveError(path, f"symlink target {target!r} leaves another link")
            stack.pop()
        else:
            stack.append(part)


@dataclass
class _Planned:
    path: str
    info: tarfile.TarInfo
    source: tarfile.TarInfo | None  # where the data comes from (hard links: the target)


def _plan(
    archive: tarfile.TarFile, *, limits: ArchiveLimits, denylist: Denylist | None
) -> tuple[list[_Planned], ArchiveSummary]:
    """Validate every member of ``archive``; return what to write and the summary.

    With a ``denylist`` (snapshot mode) special files and unsafe symlinks are dropped and listed
    in ``excluded`` instead of refused: a live HOME may hold a socket or a link to ``/usr``, and
    a snapshot should not fail for it. Limits and path rules apply in both modes.
    """
    lenient = denylist is not None
    planned: list[_Planned] = []
    seen: dict[str, str] = {}  # path -> kind ("file", "dir", "link")
    files: dict[str, tarfile.TarInfo] = {}
    excluded: list[str] = []
    total = 0
    count = 0
    for info in _iter_members(archive):
        count += 1
        if count > limits.max_members:
            raise ArchiveLimitError(info.name, f"more than {limits.max_members} members")
        path = normalize_member_path(info.name, limits=limits)
        if not path:
            continue
        if denylist is not None and denylist.matches(path):
            excluded.append(path)
            continue
        if info.isdir():
            kind = "dir"
        elif info.isreg():
            kind = "file"
        elif info.issym():
            kind = "link"
        elif info.islnk():
            kind = "file"
        elif lenient:
            excluded.append(path)
            continue
        else:
            raise UnsafeArchiveError(info.name, "device, FIFO or other special file")
        previous = seen.get(path)
        if previous is not None and not (previous == kind == "dir"):
            raise UnsafeArchiveError(info.name, "path appears more than once")
        seen[path] = kind
        source: tarfile.TarInfo | None = None
        if info.islnk():
            target = normalize_member_path(info.linkname, limits=limits)
            if denylist is not None and denylist.matches(target):
                excluded.append(path)  # a second name for a denied file is denied too
                del seen[path]
                continue
            if target not in files:
                raise UnsafeArchiveError(
                    info.name, f"hard link to {info.linkname!r}, not an earlier regular file"
                )
            source = files[target]
        elif info.isreg():
            source = info
        size = source.size if source is not None else 0
        if size > limits.max_member_bytes:
            raise ArchiveLimitError(info.name, f"larger than {limits.max_member_bytes} bytes")
        total += size
        if total > limits.max_total_bytes:
            raise ArchiveLimitError(info.name, f"archive over {limits.max_total_bytes} bytes")
        if info.isreg():
            files[path] = info
        planned.append(_Planned(path, info, source))
    symlinks = {p.path for p in planned if p.info.issym()}
    unsafe: set[str] = set()
    for item in planned:
        if item.info.issym():
            try:
                _check_symlink_target(item.path, item.info.linkname, symlinks)
            except UnsafeArchiveError:
                if not lenient:
                    raise
                unsafe.add(item.path)
    if unsafe:
        excluded.extend(sorted(unsafe))
        planned = [p for p in planned if p.path not in unsafe]
        symlinks -= unsafe
    for item in planned:
        parts = item.path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in symlinks:
                raise UnsafeArchiveError(item.info.name, "path goes through a symlink")
    return planned, ArchiveSummary(len(planned), total, tuple(excluded))


def _iter_members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    try:
        yield from archive
    except tarfile.TarError as exc:
        raise CorruptArchiveError(f"unreadable tar archive: {exc}") from exc


def _clean_info(item: _Planned) -> tarfile.TarInfo:
    src = item.info
    out = tarfile.TarInfo(item.path)
    out.mtime = src.mtime
    out.uid = out.gid = 0
    out.uname = out.gname = ""
    if src.issym():
        out.type = tarfile.SYMTYPE
        out.linkname = src.linkname
        out.mode = 0o777
    elif src.isdir():
        out.type = tarfile.DIRTYPE
        out.mode = (src.mode & 0o777) | 0o700
    else:
        out.type = tarfile.REGTYPE
        out.mode = (src.mode & 0o777) | 0o600
        out.size = item.source.size if item.source is not None else 0
    return out


def _write_planned(
    archive: tarfile.TarFile, planned: list[_Planned], out: Path, *, compress: bool
) -> None:
    """Write ``planned`` to ``out`` atomically (temp file in the same directory + rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with contextlib.ExitStack() as stack:
            sink: Any = stack.enter_context(os.fdopen(fd, "wb"))
            if compress:
                sink = stack.enter_context(gzip.GzipFile(fileobj=sink, mode="wb"))
            with tarfile.open(fileobj=sink, mode="w", format=tarfile.GNU_FORMAT) as dst:
                for item in planned:
                    info = _clean_info(item)
                    data: IO[bytes] | None = None
                    if item.source is not None:
                        data = archive.extractfile(item.source)
                        if data is None:
                            raise CorruptArchiveError(f"no data for member {item.info.name!r}")
                    dst.addfile(info, data)
        os.chmod(tmp, 0o644)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _open_for_read(src: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(src, mode="r:*")
    except tarfile.TarError as exc:
        raise CorruptArchiveError(f"{src.name} is not a readable tar archive: {exc}") from exc


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

    ``denylist`` drops matching members instead of refusing them (snapshots). ``compress``
    defaults to gzip when ``out`` ends in ``.tar.gz``/``.tgz``. Raises ``UnsafeArchiveError``
    (nothing written) or ``CorruptArchiveError``.
    """
    lim = limits or ArchiveLimits()
    with _open_for_read(src) as archive:
        planned, summary = _plan(archive, limits=lim, denylist=denylist)
        gz = _wants_gzip(out) if compress is None else compress
        _write_planned(archive, planned, out, compress=gz)
    return summary


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
    return ArchiveSummary(summary.members, summary.total_bytes, tuple(excluded))
