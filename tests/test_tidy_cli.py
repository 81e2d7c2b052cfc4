"""Explicit ``oabctl`` registration: ``cli.main.GROUPS`` lists the command groups, each module's
``COMMANDS`` lists its commands, plugins come from entry points; importing registers nothing."""

from __future__ import annotations

import importlib

import pytest

from oab.controller.cli import main, registry
from oab.controller.cli.context import Context


def _run(_ctx: Context) -> int:
    return 0


def test_decorating_a_command_registers_nothing() -> None:
    before = dict(main.commands())
    made = registry.command("frobnicate", help="not offered anywhere")(_run)
    assert isinstance(made, registry.Command)
    assert made.name == "frobnicate"
    assert dict(main.commands()) == before
    assert "frobnicate" not in main.commands()


def test_reimporting_a_group_changes_nothing() -> None:
    # Importing twice used to raise "registered twice": modules no longer have import effects.
    before = sorted(main.commands())
    importlib.reload(importlib.import_module("oab.controller.cli.config"))
    assert sorted(main.commands()) == before


def test_every_command_comes_from_a_listed_group_or_a_plugin() -> None:
    listed = {c.name for group in main.GROUPS for c in group}
    assert set(main.commands()) == listed | {"local"}
    assert "init" in listed


def test_a_name_offered_twice_is_refused() -> None:
    one = registry.command("x", help="one")(_run)
    alias = registry.command("y", help="two", aliases=["x"])(_run)
    with pytest.raises(ValueError, match="'x' registered twice"):
        registry.index([one, alias])
