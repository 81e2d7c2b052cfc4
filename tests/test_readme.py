"""README.md stays true: every command and every setting is documented there."""

from __future__ import annotations

from pathlib import Path

from oab.controller.cli import main as cli
from oab.controller.runtime.settings import DaemonSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_oabctl_command_is_documented() -> None:
    cli.build_parser()  # imports the extension modules, which register their commands
    names = sorted(cli.commands())
    assert len(names) >= 10
    missing = [n for n in names if f"oabctl {n}" not in README]
    assert missing == [], f"README.md does not document: {missing}"


def test_every_daemon_setting_is_documented() -> None:
    missing = [
        name
        for name in DaemonSettings.model_fields
        if name != "profile" and f"`{name}`" not in README
    ]
    assert missing == [], f"README.md does not document settings: {missing}"


def test_quick_start_is_the_two_make_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick
    assert "make test" in quick
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci
