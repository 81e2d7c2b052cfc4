"""Hostile-archive validation, snapshots and Restore(snapshot(HOME)) round trips."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from oab.controller.agent.archive import (
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


def tree(root: Path) -> dict[str, tuple[str, object]]:
    """A comparable picture of a directory: kind, content or link target, permission bits."""
    out: dict[str, tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full))
            elif full.is_dir():
                out[rel] = ("dir", full.stat().st_mode & 0o777)
            else:
                out[rel] = ("file", (full.read_bytes(), full.stat().st_mode & 0o777))
    return out


def make_home(home: Path) -> None:
    (home / ".kiro" / "memory").mkdir(parents=True)
    (home / ".kiro" / "memory" / "notes.md").write_text("remember the milk\n")
    (home / "bin").mkdir()
    tool = home / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    (home / "empty-dir").mkdir()
    (home / "data.bin").write_bytes(bytes(range(256)) * 40)
    (home / "latest").symlink_to(".kiro/memory/notes.md")
    (home / ".kiro" / "up").symlink_to("../bin")
    (home / "unicodé ✓.txt").write_text("ok")


def build(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode=mode, format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def reg(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def test_restore_of_snapshot_reproduces_the_tree(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_home(home)
    snap = tmp_path / "out" / "home.tar.gz"
    summary = create_archive(home, snap, Denylist())
    assert summary.members == len(tree(home))
    restored = tmp_path / "restored"
    restore_archive(snap, restored)
    assert tree(restored) == tree(home)


def test_snapshot_drops_config_and_credentials_but_keeps_similar_names(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_home(home)
    (home / "config.toml").write_text('bot_token = "${DISCORD_BOT_TOKEN}"')
    (home / ".codex").mkdir()
    (home / ".codex" / "auth.json").write_text("{}")
    (home / ".codex" / "config.toml").write_text("model = 'x'")  # an agent setting: kept
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text("[default]\naws_secret_access_key=abc")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE")
    (home / ".ssh" / "known_hosts").write_text("github.com ...")
    (home / "certs").mkdir()
    (home / "certs" / "server.pem").write_text("PRIVATE")
    (home / ".gnupg" / "private-keys-v1.d").mkdir(parents=True)
    (home / ".gnupg" / "private-keys-v1.d" / "k.key").write_text("PRIVATE")
    snap = tmp_path / "snap.tar"
    summary = create_archive(home, snap, Denylist().with_extra(["secret-*.txt"]))
    (home / "secret-1.txt").write_text("never seen: created after the snapshot")
    restored = tmp_path / "restored"
    restore_archive(snap, restored)
    got = tree(restored)
    for denied in (
        "config.toml",
        ".codex/auth.json",
        ".aws/credentials",
        ".ssh/id_ed25519",
        "certs/server.pem",
        ".gnupg",
    ):
        assert denied not in got
        assert denied in summary.excluded
    assert ".codex/config.toml" in got
    assert ".ssh/known_hosts" in got
    with tarfile.open(snap) as tar:
        assert not any(b"PRIVATE" in (tar.extractfile(m) or io.BytesIO()).read() for m in tar)


def test_denylist_extra_patterns_and_anchoring() -> None:
    deny = Denylist(("/config.toml", "*.pem", ".ssh/id_*", "tokens/"))
    assert deny.matches("config.toml")
    assert not deny.matches("sub/config.toml")
    assert deny.matches("a/b/c.pem")
    assert deny.matches(".ssh/id_rsa")
    assert not deny.matches("x/.ssh/id_rsa")
    assert deny.matches("tokens/a/b")
    assert deny.with_extra(["notes.md", " "]).matches("deep/notes.md")
    with pytest.raises(ValueError, match="invalid denylist"):
        Denylist(("../etc",))


def test_filter_archive_repacks_what_tar_wrote(tmp_path: Path) -> None:
    raw = build(
        tmp_path / "raw.tar",
        [
            reg("./config.toml", b"x"),
            reg("./.netrc", b"machine"),
            reg("./keep.txt", b"keep"),
        ],
    )
    out = tmp_path / "clean.tar"
    summary = filter_archive(raw, out, denylist=Denylist())
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["keep.txt"]
    assert set(summary.excluded) == {"config.toml", ".netrc"}


REJECTIONS: list[tuple[str, Callable[[], list[tuple[tarfile.TarInfo, bytes | None]]], str]] = [
    ("absolute", lambda: [reg("/etc/passwd")], "absolute path"),
    ("dotdot", lambda: [reg("a/../../evil")], r"'\.\.' in path"),
    ("dotdot-only", lambda: [reg("..")], r"'\.\.' in path"),
    (
        "symlink-absolute",
        lambda: [special("l", tarfile.SYMTYPE, "/etc/shadow")],
        "symlink to absolute path",
    ),
    (
        "symlink-escape",
        lambda: [special("d/l", tarfile.SYMTYPE, "../../outside")],
        "escapes the root",
    ),
    (
        "symlink-then-write-through",
        lambda: [special("l", tarfile.SYMTYPE, "d"), reg("l/f")],
        "through a symlink",
    ),
    (
        "symlink-dotdot-after-link",
        lambda: [
            special("a", tarfile.SYMTYPE, "x/y/z"),
            special("b", tarfile.SYMTYPE, "a/../../../.."),
        ],
        r"symlink target 'a/\.\./\.\./\.\./\.\.' escapes the root \(through the link 'a'\)",
    ),
    (
        "hardlink-escape",
        lambda: [special("h", tarfile.LNKTYPE, "../../etc/passwd")],
        r"'\.\.' in path",
    ),
    (
        "hardlink-absolute",
        lambda: [special("h", tarfile.LNKTYPE, "/etc/passwd")],
        "absolute path",
    ),
    (
        "hardlink-to-unknown",
        lambda: [special("h", tarfile.LNKTYPE, "not-there")],
        "not an earlier regular file",
    ),
    ("char-device", lambda: [special("dev", tarfile.CHRTYPE)], "device, FIFO"),
    ("block-device", lambda: [special("dev", tarfile.BLKTYPE)], "device, FIFO"),
    ("fifo", lambda: [special("pipe", tarfile.FIFOTYPE)], "device, FIFO"),
    ("duplicate", lambda: [reg("a"), reg("a")], "more than once"),
]


@pytest.mark.parametrize(("case", "members", "message"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_hostile_archives_are_refused_before_anything_is_written(
    tmp_path: Path,
    case: str,
    members: Callable[[], list[tuple[tarfile.TarInfo, bytes | None]]],
    message: str,
) -> None:
    src = build(tmp_path / f"{case}.tar", [reg("ok.txt", b"fine"), *members()])
    dest = tmp_path / "home"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match=message):
        restore_archive(src, dest)
    assert list(dest.iterdir()) == []
    out = tmp_path / "clean.tar"
    with pytest.raises(UnsafeArchiveError, match=message):
        sanitize_archive(src, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_size_and_count_caps(tmp_path: Path) -> None:
    limits = ArchiveLimits(max_member_bytes=100, max_total_bytes=250, max_members=3)
    dest = tmp_path / "home"
    big = build(tmp_path / "big.tar", [reg("big", b"x" * 101)])
    with pytest.raises(ArchiveLimitError, match="larger than 100 bytes"):
        restore_archive(big, dest, limits)
    total = build(tmp_path / "total.tar", [reg(f"f{i}", b"x" * 100) for i in range(3)])
    with pytest.raises(ArchiveLimitError, match="over 250 bytes"):
        restore_archive(total, dest, limits)
    many = build(tmp_path / "many.tar", [reg(f"f{i}", b"") for i in range(4)])
    with pytest.raises(ArchiveLimitError, match="more than 3 members"):
        restore_archive(many, dest, limits)
    # Hard-linked copies count their size again: a link farm cannot dodge the total cap.
    links = build(
        tmp_path / "links.tar",
        [reg("f", b"x" * 100), *(special(f"h{i}", tarfile.LNKTYPE, "f") for i in range(2))],
    )
    with pytest.raises(ArchiveLimitError, match="over 250 bytes"):
        restore_archive(links, dest, limits)
    long = build(tmp_path / "long.tar", [reg("d/" * 30 + "f")])
    with pytest.raises(ArchiveLimitError, match="longer than"):
        restore_archive(long, dest, ArchiveLimits(max_path_bytes=40))
    assert not dest.exists() or list(dest.iterdir()) == []


def test_sanitized_archive_is_tamed(tmp_path: Path) -> None:
    setuid = tarfile.TarInfo("run")
    setuid.mode = 0o4755
    setuid.uid, setuid.uname = 4242, "mallory"
    unreadable = tarfile.TarInfo("locked")
    unreadable.mode = 0o000
    src = build(
        tmp_path / "in.tar.gz",
        [
            (setuid, b"#!/bin/sh\n"),
            (unreadable, b"x"),
            reg("orig", b"shared"),
            special("copy", tarfile.LNKTYPE, "orig"),
            special("ok-link", tarfile.SYMTYPE, "orig"),
        ],
        mode="w:gz",
    )
    out = tmp_path / "home.tar"
    summary = sanitize_archive(src, out)
    assert summary.members == 5
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar}
        assert members["run"].mode == 0o755
        assert (members["run"].uid, members["run"].uname) == (0, "")
        assert members["locked"].mode == 0o600
        assert members["copy"].isreg()
        copy = tar.extractfile(members["copy"])
        assert copy is not None
        assert copy.read() == b"shared"
        assert members["ok-link"].issym()


def test_restore_refuses_to_write_through_an_existing_outside_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(outside)
    src = build(tmp_path / "in.tar", [reg("cache/evil", b"x")])
    with pytest.raises(UnsafeArchiveError):
        restore_archive(src, home)
    assert list(outside.iterdir()) == []


def test_restore_keeps_files_the_image_ships(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "shipped").write_text("from the image")
    (home / "memory.md").write_text("old")
    src = build(tmp_path / "in.tar", [reg("memory.md", b"new"), reg("extra", b"e")])
    restore_archive(src, home)
    assert (home / ".config" / "shipped").read_text() == "from the image"
    assert (home / "memory.md").read_text() == "new"
    assert (home / "extra").read_text() == "e"


def test_garbage_is_a_corrupt_archive(tmp_path: Path) -> None:
    src = tmp_path / "junk.tar.gz"
    src.write_bytes(b"\x1f\x8b not really gzip" * 10)
    with pytest.raises(CorruptArchiveError):
        sanitize_archive(src, tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        ArchiveLimits(max_members=0)
    with pytest.raises(ValueError, match="exceeds"):
        ArchiveLimits(max_member_bytes=10, max_total_bytes=5)
