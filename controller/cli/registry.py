"""The ``oabctl`` command registry and exit codes.

Design
------
Every subcommand is a :class:`Command` (name, help, how to add its arguments, how to run)
registered with :func:`command`. The command modules (``oab.controller.cli.*``, listed in
:data:`oab.controller.cli.main.COMMAND_MODULES`, and plugins named by the ``oabctl.commands``
entry points) call it at import time; :func:`oab.controller.cli.main.build_parser` imports them
first. Adding a command never touches the parser code.

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
from collections.abc import Callable, Mapping, Sequence
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
    "registered",
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


_REGISTRY: dict[str, Command] = {}


def command(
    name: str,
    *,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None] = lambda _p: None,
    aliases: Sequence[str] = (),
) -> Callable[[Callable[[Context], int]], Callable[[Context], int]]:
    """Register the decorated ``run(ctx) -> exit code`` as subcommand ``name``."""

    def register(run: Callable[[Context], int]) -> Callable[[Context], int]:
        if name in _REGISTRY:
            raise ValueError(f"oabctl command {name!r} registered twice")
        _REGISTRY[name] = Command(name, help, run, configure, tuple(aliases))
        return run

    return register


def registered() -> Mapping[str, Command]:
    """Every command registered so far, by name (read-only)."""
    return MappingProxyType(_REGISTRY)


class UsageError(OabError):
    """Bad command-line usage (exit 2)."""

    reason = "Usage"
