"""The ``oabctl`` command registry and exit codes.

Design
------
Every subcommand is a :class:`Command` (name, help, how to add its arguments, how to run), built
by decorating its ``run`` with :func:`command`. Nothing is registered as a side effect of an
import: each command-group module lists its commands in a ``COMMANDS`` tuple, and
:data:`oab.controller.cli.main.GROUPS` lists the groups, explicitly, in one place. Plugins (the
``oabctl.commands`` entry points: ``oabctl local`` from the local tooling, which the product never
imports) name a module with such a tuple; :func:`oab.controller.cli.main.commands` loads them.

Exit codes
----------
=====  ==================================================================================
0      success (``diff``: no differences)
1      invalid input (manifest, settings), not found, owned by a fleet, ``diff`` found
       differences, a condition not met
2      usage error (unknown command or flag)
3      AWS / infrastructure error (unreachable endpoint, throttling, permissions, ...)
4      gave up after repeated concurrent modifications (apply again)
70     internal error (a bug: rerun with ``--debug`` and report the traceback)
130    interrupted (Ctrl-C)
=====  ==================================================================================
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from oab.controller.base.errors import OabError

if TYPE_CHECKING:
    from oab.controller.cli.context import Context

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_INFRA",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "UsageError",
    "command",
    "index",
]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INFRA = 3
EXIT_CONFLICT = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """One subcommand: ``configure`` adds its arguments, ``run`` does the work."""

    name: str
    help: str
    run: Callable[[Context], int]
    configure: Callable[[argparse.ArgumentParser], None] = lambda _p: None
    aliases: tuple[str, ...] = ()


def command(
    name: str,
    *,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None] = lambda _p: None,
    aliases: Sequence[str] = (),
) -> Callable[[Callable[[Context], int]], Command]:
    """Make the decorated ``run(ctx) -> exit code`` subcommand ``name`` (a :class:`Command`; list
    it in its module's ``COMMANDS`` to offer it)."""

    def make(run: Callable[[Context], int]) -> Command:
        return Command(name, help, run, configure, tuple(aliases))

    return make


def index(commands: Iterable[Command]) -> Mapping[str, Command]:
    """``commands`` by name (read-only); a name or alias offered twice is a ``ValueError``."""
    found: dict[str, Command] = {}
    for cmd in commands:
        for name in (cmd.name, *cmd.aliases):
            if name in found:
                raise ValueError(f"oabctl command {name!r} registered twice")
            found[name] = cmd
    return MappingProxyType({c.name: c for c in found.values()})


class UsageError(OabError):
    """Bad command-line usage (exit 2)."""

    reason = "Usage"
