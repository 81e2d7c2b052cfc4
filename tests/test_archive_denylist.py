"""The snapshot denylist: every agent's and tool's credential store, matched case-insensitively."""

from __future__ import annotations

from pathlib import Path

import pytest

from oab.controller.agent import main as agent
from oab.controller.agent.archive import (
    ALWAYS_DENIED,
    CREDENTIAL_STORES,
    DEFAULT_DENYLIST,
    Denylist,
    create_archive,
    restore_archive,
)
from oab.controller.base import taskcontract


def concrete(pattern: str) -> str:
    """A real path the pattern denies (globs filled in, anchoring slash dropped)."""
    return pattern.lstrip("/").replace("*", "x-1")


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("pattern", [p for p, _ in CREDENTIAL_STORES])
def test_each_credential_store_is_denied_in_any_case(pattern: str) -> None:
    path = concrete(pattern)
    deny = Denylist()
    assert deny.matches(path)
    assert deny.matches(path.upper())
    assert deny.matches(f"{path}/inside/a/directory")
    if "/" not in pattern:  # a name at any depth
        assert deny.matches(f"projects/app/{path}")


def test_the_default_list_is_the_config_plus_every_documented_store() -> None:
    assert (ALWAYS_DENIED, *(p for p, _ in CREDENTIAL_STORES)) == DEFAULT_DENYLIST
    assert all(why.strip() for _, why in CREDENTIAL_STORES)
    names = {p for p, _ in CREDENTIAL_STORES}
    for issue_item in ("*.pem", ".vault-token", ".claude/.credentials.json", ".codex/auth.json"):
        assert issue_item in names


@pytest.mark.parametrize(
    "path",
    [
        "certs/SERVER.PEM",
        "Certs/Client.Key",
        ".SSH/ID_ED25519",
        ".Vault-Token",
        ".AWS/Credentials",
        ".local/share/Kiro-CLI/data.sqlite3-wal",
        "app/.ENV",
    ],
)
def test_spelling_does_not_let_a_credential_out(path: str) -> None:
    assert Denylist().matches(path)


@pytest.mark.parametrize(
    "path",
    [
        ".codex/config.toml",
        ".ssh/known_hosts",
        ".ssh/config",
        ".gemini/settings.json",
        ".copilot/mcp-config.json",
        ".claude/settings.json",
        ".kiro/steering/product.md",
        ".local/share/opencode/storage/session.json",
        "notes.pem.md",
        "sub/config.toml",
        "monkey",
        ".environment",
    ],
)
def test_similar_names_are_kept(path: str) -> None:
    assert not Denylist().matches(path)


def test_globs_stay_within_one_component() -> None:
    deny = Denylist(("a*b", "/top/?x"))
    assert deny.matches("deep/aXXb")
    assert not deny.matches("ax/yb")
    assert deny.matches("top/1x/below")
    assert not deny.matches("top/12/x")
    assert Denylist(("[!a]z",)).matches("bz")
    assert not Denylist(("[!a]z",)).matches("az")


def test_a_kept_pattern_overrides_the_defaults_but_never_the_config() -> None:
    kiro = ".local/share/kiro-cli/data.sqlite3"
    deny = Denylist().with_extra(["!.local/share/kiro-cli/data.sqlite3*", "!config.toml"])
    assert not deny.matches(kiro)
    assert not deny.matches(kiro + "-wal")
    assert deny.matches(".codex/auth.json")
    assert deny.matches("config.toml")
    assert deny.matches("CONFIG.TOML")


@pytest.mark.parametrize("bad", ["..", "a/../b", "/", "!", "!/", "a\nb", "[z-a]"])
def test_invalid_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid denylist pattern"):
        Denylist().with_extra([bad])


def test_sidecar_reads_kept_and_extra_patterns_from_env() -> None:
    env = {
        taskcontract.ENV_NAMESPACE: "team",
        taskcontract.ENV_NAME: "bot",
        taskcontract.ENV_BUCKET: "oab-control-plane",
        taskcontract.ENV_DENYLIST: "secrets/,!.local/share/kiro-cli/data.sqlite3*\n*.kdbx",
    }
    deny = agent.sidecar_config_from_env(env).denylist
    assert deny.matches("secrets/x")
    assert deny.matches("vault.KDBX")
    assert not deny.matches(".local/share/kiro-cli/data.sqlite3")


def test_snapshot_of_a_home_full_of_credentials_keeps_none(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stores = [concrete(p) for p, _ in CREDENTIAL_STORES]
    for i, rel in enumerate(stores):
        # Alternate spellings: a store must not slip out as .CODEX/AUTH.JSON either.
        target = home / (rel.upper() if i % 2 else rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("secret")
    (home / "memory.md").write_text("keep me")
    snap = tmp_path / "snap.tar.gz"
    summary = create_archive(home, snap, Denylist())
    restored = tmp_path / "restored"
    restore_archive(snap, restored)
    assert files_under(restored) == {"memory.md"}
    assert len(summary.excluded) >= len(stores)
