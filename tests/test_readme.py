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


def test_the_oabctl_table_lists_every_command_with_every_flag() -> None:
    """Each command has a row in the "## oabctl" table whose first cell shows all its own flags
    (the global settings flags are listed once above the table)."""
    import argparse

    section = README.split("\n## oabctl\n", 1)[1].split("\n## ", 1)[0]
    usage = [
        line[2:].split(" | ", 1)[0]
        for line in section.splitlines()
        if line.startswith("| `oabctl ")
    ]
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    global_flags = {"--profile", "--config", "--region", "--bucket", "--table-prefix"}
    global_flags |= {"--cluster", "--endpoint", "--debug", "--help", "-h"}
    assert all(f"`{flag}`" in section for flag in global_flags - {"--help", "-h"})
    missing: list[str] = []
    for name, command in sorted(sub.choices.items()):
        cells = " ".join(u for u in usage if u.startswith(f"`oabctl {name}"))
        if not cells:
            missing.append(name)
            continue
        for action in command._actions:
            flags = [f for f in action.option_strings if f not in global_flags]
            if flags and not any(f in cells for f in flags):
                missing.append(f"{name} {'/'.join(flags)}")
    assert missing == [], f"README.md ## oabctl table misses: {missing}"
