"""Hostile archives (issue 11): link chains, NUL and control characters, header bombs, corrupt
compressed streams, and snapshots that drop links leaving HOME."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from oab.controller.agent.archive import (
    MAX_GLOBAL_HEADER_BYTES,
    ArchiveLimitError,
    ArchiveLimits,
    CorruptArchiveError,
    Denylist,
    UnsafeArchiveError,
    create_archive,
    filter_archive,
    restore_archive,
    sanitize_archive,
)

Member = tuple[tarfile.TarInfo, bytes | None]


def reg(name: str, data: bytes = b"x") -> Member:
    return tarfile.TarInfo(name), data


def link(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def folder(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def build(path: Path, members: list[Member], *, fmt: int = tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(path, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def raw_header(name: str, typeflag: bytes, size: int) -> bytes:
    """A ustar header block as a hostile writer would emit it (no tarfile checks)."""
    info = tarfile.TarInfo(name)
    info.type = typeflag
    info.size = size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def assert_refused(src: Path, tmp_path: Path, error: type[Exception], message: str) -> None:
    """``src`` is refused with ``message`` by sanitize and restore, and nothing is written."""
    out = tmp_path / "clean.tar"
    with pytest.raises(error, match=message):
        sanitize_archive(src, out)
    assert not out.exists()
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    with pytest.raises(error, match=message):
        restore_archive(src, home)
    assert list(home.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- symlinks resolved through the archive's own links -----------------------------------------

# b/c/d/e points at the root (inside); through a -> b/c/d, "a/e/.." is the root's parent.
CHAIN = [folder("b/c/d"), link("b/c/d/e", "../../.."), link("a", "b/c/d")]
LINK_CASES: list[tuple[str, Callable[[], list[Member]], str]] = [
    (
        "chain-escape",
        lambda: [*CHAIN, link("x", "a/e/..")],
        r"'x'.*escapes the root \(through the link 'b/c/d/e'\)",
    ),
    (
        "chain-escape-links-defined-later",
        lambda: [link("x", "a/e/../etc/passwd"), *reversed(CHAIN)],
        r"'x'.*escapes the root",
    ),
    (
        "chain-through-an-escaping-link",
        lambda: [link("up", ".."), link("x", "up/y")],
        r"'(up|x)'.*escapes the root",
    ),
    ("loop", lambda: [link("p", "q/x"), link("q", "p/y")], "symlink loop"),
    (
        "nested-too-deep",
        lambda: [link(f"l{i}", f"l{i + 1}") for i in range(45)] + [link("l45", ".")],
        "more than 40 nested symlinks",
    ),
    (
        "file-written-through-a-later-link",
        lambda: [reg("l/f"), link("l", "d")],
        r"path goes through a symlink \('l'\)",
    ),
    (
        "file-written-through-a-link-chain",
        lambda: [folder("d"), link("l", "d"), link("m", "l"), reg("m/f")],
        r"path goes through a symlink \('m'\)",
    ),
]


@pytest.mark.parametrize(("case", "members", "message"), LINK_CASES, ids=[c[0] for c in LINK_CASES])
def test_links_are_resolved_through_the_archives_own_links(
    tmp_path: Path, case: str, members: Callable[[], list[Member]], message: str
) -> None:
    src = build(tmp_path / f"{case}.tar", [reg("ok.txt"), *members()])
    assert_refused(src, tmp_path, UnsafeArchiveError, message)


def test_links_that_stay_inside_through_other_links_are_kept(tmp_path: Path) -> None:
    src = build(
        tmp_path / "in.tar",
        [
            *CHAIN,
            reg("b/c/notes.md", b"n"),
            link("root", "a/e"),  # -> b/c/d/e -> the root itself
            link("notes", "a/../notes.md"),  # a -> b/c/d, .. -> b/c
            link("deep", "x/y/z"),
            link("back", "deep/../.."),  # x/y/z/../.. = x: inside, though lexically '..' twice
        ],
    )
    home = tmp_path / "home"
    summary = restore_archive(src, home)
    assert summary.members == 8
    assert (home / "notes").read_bytes() == b"n"
    assert os.path.realpath(home / "root") == str(home)
    assert os.path.realpath(home / "back") == str(home / "x")


# -- NUL and control characters ----------------------------------------------------------------


def pax(name: str, *, linkpath: str | None = None, path: str | None = None) -> Member:
    info = tarfile.TarInfo(name)
    if linkpath is not None:
        info.type = tarfile.SYMTYPE
        info.pax_headers = {"linkpath": linkpath}
        return info, None
    info.pax_headers = {"path": path or name}
    return info, b"x"


NAME_CASES: list[tuple[str, Callable[[], list[Member]], str]] = [
    # GNU tar cuts a PAX link target at the NUL: it would create l -> ..
    ("pax-linkpath-nul", lambda: [pax("l", linkpath="..\x00/inside")], "NUL in symlink target"),
    ("pax-path-nul", lambda: [pax("f", path="a\x00b")], "NUL in path"),
    ("newline-in-name", lambda: [reg("log\nforged line")], r"control character '\\n' in path"),
    ("escape-in-name", lambda: [reg("x\x1b[2J")], r"control character '\\x1b' in path"),
    ("c1-in-name", lambda: [reg("x\x9by")], r"control character '\\x9b' in path"),
    ("control-in-link", lambda: [link("l", "a\rb")], r"control character '\\r' in symlink"),
    ("long-link-target", lambda: [link("l", "a/" * 2100)], "symlink target longer than 4096"),
]


@pytest.mark.parametrize(("case", "members", "message"), NAME_CASES, ids=[c[0] for c in NAME_CASES])
def test_nul_and_control_characters_are_refused(
    tmp_path: Path, case: str, members: Callable[[], list[Member]], message: str
) -> None:
    src = build(tmp_path / f"{case}.tar", [reg("ok.txt"), *members()], fmt=tarfile.PAX_FORMAT)
    error = ArchiveLimitError if "longer" in message else UnsafeArchiveError
    assert_refused(src, tmp_path, error, message)


# -- header size caps --------------------------------------------------------------------------


def test_long_name_header_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    src = tmp_path / "bomb.tar"
    size = 200_000
    with src.open("wb") as out:
        out.write(raw_header("././@LongLink", tarfile.GNUTYPE_LONGNAME, size))
        out.write(b"a" * size + b"\0" * (-size % 512))
        out.write(raw_header("x", tarfile.REGTYPE, 0) + b"\0" * 1024)
    assert_refused(src, tmp_path, ArchiveLimitError, r"extended header of 200000 bytes \(limit")


@pytest.mark.parametrize("typeflag", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGLINK])
def test_pax_and_long_link_headers_are_capped_too(tmp_path: Path, typeflag: bytes) -> None:
    limits = ArchiveLimits(max_header_bytes=5000)
    src = tmp_path / "bomb.tar"
    with src.open("wb") as out:
        out.write(raw_header("hdr", typeflag, 6000) + b"7 a=b\n\n" * 1000)
    with pytest.raises(ArchiveLimitError, match="extended header of 6000 bytes"):
        sanitize_archive(src, tmp_path / "out.tar", limits=limits)


def test_global_pax_headers_are_kept_small(tmp_path: Path) -> None:
    src = tmp_path / "globals.tar"
    record = b"%d comment=%s\n" % (1000, b"c" * 986)
    assert len(record) == 1000
    with src.open("wb") as out:
        for _ in range(MAX_GLOBAL_HEADER_BYTES // 1000 + 1):
            out.write(raw_header("pax_global_header", tarfile.XGLTYPE, 1000))
            out.write(record + b"\0" * 24)
    with pytest.raises(ArchiveLimitError, match="global PAX headers over"):
        sanitize_archive(src, tmp_path / "out.tar")


def test_names_and_headers_share_one_metadata_budget(tmp_path: Path) -> None:
    members = [reg(f"dir-{i:04d}/" + "n" * 200) for i in range(60)]
    src = build(tmp_path / "many.tar", members, fmt=tarfile.PAX_FORMAT)
    with pytest.raises(ArchiveLimitError, match="more than 10000 bytes of names"):
        sanitize_archive(src, tmp_path / "out.tar", limits=ArchiveLimits(max_metadata_bytes=10_000))
    assert sanitize_archive(src, tmp_path / "out.tar").members == 60


@pytest.mark.parametrize(
    ("case", "blocks", "message"),
    [
        ("gnu-sparse", lambda: raw_header("s", tarfile.GNUTYPE_SPARSE, 0), "GNU sparse file"),
        (
            "pax-sparse",
            lambda: (
                raw_header("p", tarfile.XHDTYPE, 30)
                + b"30 GNU.sparse.major=1\n".ljust(30, b"\n").ljust(512, b"\0")
            ),
            "GNU sparse file",
        ),
    ],
)
def test_sparse_members_are_refused(
    tmp_path: Path, case: str, blocks: Callable[[], bytes], message: str
) -> None:
    src = tmp_path / f"{case}.tar"
    src.write_bytes(blocks() + raw_header("f", tarfile.REGTYPE, 0) + b"\0" * 1024)
    assert_refused(src, tmp_path, UnsafeArchiveError, message)


# The child prints its own peak RSS (KiB on Linux) after the sanitizer refused the bomb.
_MEASURE = """
import sys
from pathlib import Path
from oab.controller.agent.archive import ArchiveLimitError, sanitize_archive
try:
    sanitize_archive(Path(sys.argv[1]), Path(sys.argv[2]))
except ArchiveLimitError as exc:
    print("refused:", exc)
# VmHWM is this program's own peak: ru_maxrss would also count the pytest process it was
# forked from (Linux keeps the maximum across exec), which grows over a whole suite.
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def test_a_header_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A 0.25 MB gzip announcing a 256 MiB long name: tarfile alone would read it all (~0.5 GB
    peak); the guard refuses it from the 512-byte header."""
    size = 256 * 1024 * 1024
    src = tmp_path / "bomb.tar.gz"
    chunk = b"a" * (1 << 20)
    with gzip.open(src, "wb", compresslevel=1) as out:
        out.write(raw_header("././@LongLink", tarfile.GNUTYPE_LONGNAME, size))
        for _ in range(size // len(chunk)):
            out.write(chunk)
        out.write(raw_header("x", tarfile.REGTYPE, 0) + b"\0" * 1024)
    assert src.stat().st_size < 2 * 1024 * 1024
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(src), str(tmp_path / "out.tar")],
        capture_output=True,
        text=True,
        check=True,
    )
    refused, peak_kib = run.stdout.strip().splitlines()
    assert "extended header of 268435456 bytes" in refused
    assert int(peak_kib) < 150 * 1024, f"peak RSS {int(peak_kib) // 1024} MiB"


# -- unreadable input --------------------------------------------------------------------------


def _valid_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(20):
            data = os.urandom(4096)  # incompressible: a cut lands inside the data
            info = tarfile.TarInfo(f"f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _bad_crc(data: bytes) -> bytes:
    body = gzip.compress(data)
    return body[:-8] + bytes(b ^ 0xFF for b in body[-8:-4]) + body[-4:]


CORRUPT: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("gzip-truncated", lambda t: gzip.compress(t)[: len(gzip.compress(t)) // 2], "truncated"),
    ("gzip-bad-crc", _bad_crc, "CRC check failed"),
    ("gzip-bad-deflate", lambda t: gzip.compress(t)[:10] + b"\xff" * 64, "truncated or corrupt"),
    ("bzip2-truncated", lambda t: bz2.compress(t)[:-100], "truncated or corrupt"),
    ("xz-truncated", lambda t: lzma.compress(t)[:-100], "truncated or corrupt"),
    ("tar-truncated", lambda t: t[: len(t) // 2], "truncated"),
    ("zstd", lambda t: b"\x28\xb5\x2f\xfd" + t, "zstd-compressed"),
    ("garbage", lambda t: b"\x00garbage" * 100, "not a readable tar archive"),
]


@pytest.mark.parametrize(("case", "mangle", "message"), CORRUPT, ids=[c[0] for c in CORRUPT])
def test_unreadable_archives_are_corrupt_not_tracebacks(
    tmp_path: Path, case: str, mangle: Callable[[bytes], bytes], message: str
) -> None:
    src = tmp_path / f"{case}.bin"
    src.write_bytes(mangle(_valid_tar()))
    assert_refused(src, tmp_path, CorruptArchiveError, message)


def test_every_compression_is_sniffed_from_the_bytes(tmp_path: Path) -> None:
    tar = _valid_tar()
    for name, body in (
        ("a.tar.gz", gzip.compress(tar)),
        ("b.tar.bz2", bz2.compress(tar)),
        ("c.tar.xz", lzma.compress(tar)),
        ("d.tar", zlib.compress(b"")[:0] + tar),
        ("misnamed.tar", gzip.compress(tar)),
    ):
        src = tmp_path / name
        src.write_bytes(body)
        assert sanitize_archive(src, tmp_path / "out.tar").members == 20, name


def test_hard_links_of_a_compressed_archive_are_copied_in_one_pass(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("a", b"first" * 1000), ("b", b"second")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for i, target in enumerate(["a", "b", "a"]):
            info = tarfile.TarInfo(f"h{i}")
            info.type = tarfile.LNKTYPE
            info.linkname = target
            tar.addfile(info)
    src = tmp_path / "links.tar.gz"
    src.write_bytes(gzip.compress(buf.getvalue()))
    home = tmp_path / "home"
    restore_archive(src, home)
    assert (home / "h0").read_bytes() == (home / "h2").read_bytes() == b"first" * 1000
    assert (home / "h1").read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- snapshots: links that leave HOME are dropped and counted ----------------------------------


def _live_home(home: Path, outside: Path) -> None:
    (home / "b" / "c" / "d").mkdir(parents=True)
    (home / "b" / "c" / "d" / "e").symlink_to("../../..")
    (home / "a").symlink_to("b/c/d")
    (home / "chain").symlink_to("a/e/..")  # leaves HOME through two of its own links
    (home / "abs").symlink_to(outside)
    (home / "rel-out").symlink_to("../outside")
    (home / "ok").symlink_to("b/c")
    (home / "notes.md").write_text("keep")
    (home / "odd\nname").write_text("a name with a newline")


def test_snapshots_drop_links_leaving_home_and_count_them(tmp_path: Path) -> None:
    home, outside = tmp_path / "home", tmp_path / "outside"
    outside.mkdir()
    home.mkdir()
    _live_home(home, outside)
    snap = tmp_path / "snap.tar.gz"
    summary = create_archive(home, snap, Denylist())
    dropped = {"chain", "abs", "rel-out", "odd\nname"}
    assert dropped <= set(summary.excluded)
    restored = tmp_path / "restored"
    restore_archive(snap, restored)
    names = {p.name for p in restored.iterdir()}
    assert names.isdisjoint(dropped)
    assert {"a", "b", "ok", "notes.md"} <= names


def test_filtered_agent_tars_drop_links_leaving_home_too(tmp_path: Path) -> None:
    home, outside = tmp_path / "home", tmp_path / "outside"
    outside.mkdir()
    home.mkdir()
    _live_home(home, outside)
    raw = tmp_path / "raw.tar"
    with tarfile.open(raw, "w") as tar:  # what the entry script's tar -c writes
        tar.add(home, arcname=".")
    summary = filter_archive(raw, tmp_path / "clean.tar", denylist=Denylist())
    assert {"chain", "abs", "rel-out", "odd\nname"} <= set(summary.excluded)
    with tarfile.open(tmp_path / "clean.tar") as tar:
        assert {"chain", "abs", "rel-out"}.isdisjoint(tar.getnames())


def test_a_file_merely_named_like_a_sparse_record_is_kept(tmp_path: Path) -> None:
    src = build(tmp_path / "in.tar", [pax("docs/GNU.sparse.notes")], fmt=tarfile.PAX_FORMAT)
    assert sanitize_archive(src, tmp_path / "out.tar").members == 1
