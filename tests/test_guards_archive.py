"""Archive checks pinned by the mutation run over ``controller/agent/archive.py`` (issue 15).

The symlink check walks the link's target from the link's own folder: survivors of the mutation
run showed no test used a link at the top of the archive (its folder is the root) or one deep
enough that climbing several levels stays inside. Both are sanitized here through the public
entry point, on archives built in the test.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from oab.controller.agent.archive import (
    ArchiveLimitError,
    ArchiveLimits,
    UnsafeArchiveError,
    normalize_member_path,
    sanitize_archive,
)


def _archive(path: Path, links: dict[str, str], dirs: tuple[str, ...] = ()) -> Path:
    with tarfile.open(path, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_a_top_level_link_may_not_climb_out_of_the_root(tmp_path: Path) -> None:
    src = _archive(tmp_path / "a.tar", {"up": "../home"})
    with pytest.raises(UnsafeArchiveError, match="escapes the root"):
        sanitize_archive(src, tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()


def test_a_deep_link_may_climb_while_it_stays_inside(tmp_path: Path) -> None:
    src = _archive(tmp_path / "a.tar", {"a/b/c/link": "../../x"}, dirs=("a", "a/b", "a/b/c", "a/x"))
    summary = sanitize_archive(src, tmp_path / "out.tar")
    assert summary is not None
    with tarfile.open(tmp_path / "out.tar") as tar:
        assert tar.getmember("a/b/c/link").linkname == "../../x"
    # One level more leaves the root.
    src = _archive(tmp_path / "b.tar", {"a/b/c/link": "../../../../x"}, dirs=("a", "a/b"))
    with pytest.raises(UnsafeArchiveError, match="escapes the root"):
        sanitize_archive(src, tmp_path / "out2.tar")


def test_an_over_long_path_is_named_by_its_first_80_characters() -> None:
    name = "d/" + "x" * 300
    with pytest.raises(ArchiveLimitError) as refused:
        normalize_member_path(name, limits=ArchiveLimits(max_path_bytes=100))
    assert refused.value.member == name[:80]


@pytest.mark.parametrize(
    "field", ["max_member_bytes", "max_total_bytes", "max_members", "max_path_bytes"]
)
def test_every_archive_limit_must_be_positive(field: str) -> None:
    # (A total below the single-member cap is refused for another reason: lower that too.)
    other = {"max_member_bytes": 1} if field == "max_total_bytes" else {}
    assert getattr(ArchiveLimits(**{field: 1}, **other), field) == 1
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"{field} must be positive"):
            ArchiveLimits(**{field: bad}, **other)


def test_a_dotted_or_doubled_slash_target_is_still_walked_to_its_end(tmp_path: Path) -> None:
    for target in ("./../home", "x//../../home"):
        src = _archive(tmp_path / "a.tar", {"up": target}, dirs=("x",))
        with pytest.raises(UnsafeArchiveError, match="escapes the root"):
            sanitize_archive(src, tmp_path / "out.tar")


def test_a_single_member_may_be_as_large_as_the_whole_archive() -> None:
    assert ArchiveLimits(max_member_bytes=5, max_total_bytes=5).max_member_bytes == 5
    with pytest.raises(ValueError, match="exceeds max_total_bytes"):
        ArchiveLimits(max_member_bytes=6, max_total_bytes=5)


@pytest.mark.parametrize(("header", "path"), [(100, 100), (99, 100), (2, 400)])
def test_a_header_must_be_larger_than_the_path_it_carries(header: int, path: int) -> None:
    # A tar header holds the member path and more: a header budget at or below the path budget
    # would refuse every path that reaches the path limit.
    with pytest.raises(ValueError, match="max_header_bytes must exceed max_path_bytes"):
        ArchiveLimits(max_header_bytes=header, max_path_bytes=path)
    assert (
        ArchiveLimits(max_header_bytes=path + 1, max_path_bytes=path).max_header_bytes == path + 1
    )


def test_a_path_of_exactly_the_limit_is_accepted() -> None:
    limits = ArchiveLimits(max_path_bytes=100)
    assert normalize_member_path("x" * 100, limits=limits) == "x" * 100
    with pytest.raises(ArchiveLimitError):
        normalize_member_path("x" * 101, limits=limits)


def test_a_link_to_a_name_sorting_before_dotdot_is_no_step_up(tmp_path: Path) -> None:
    src = _archive(tmp_path / "a.tar", {"l": "-data", "m": "#notes"})
    sanitize_archive(src, tmp_path / "out.tar")
    with tarfile.open(tmp_path / "out.tar") as tar:
        assert tar.getmember("l").linkname == "-data"
