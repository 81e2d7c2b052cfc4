"""``oabctl``: the command-line client, with kubectl's conventions.

Design
------
- **Commands** (:mod:`oab.controller.cli.registry`). Every subcommand is a ``Command``; each
  command-group module lists its own in ``COMMANDS`` and :data:`GROUPS` lists the groups, here,
  explicitly (no registration as an import side effect, no loading by module-name strings).
  Plugins are the ``oabctl.commands`` entry points (the ``local`` group lives in
  :mod:`oab.controller.local`, which the product never imports): each names a module with a
  ``COMMANDS`` tuple. :func:`commands` is the whole set; :func:`build_parser` adds each to the
  parser. Adding a command never touches the parser code.
- **Context** (:mod:`oab.controller.cli.context`): arguments, settings, lazily built clients,
  the output format and the three streams.
- **Errors.** Commands raise; :func:`exit_code_for` is the single place mapping errors to exit
  codes and :func:`main` prints one line per problem on stderr (file, field path, fix), never a
  traceback for an expected error (``--debug`` adds it).

Exit codes: :mod:`oab.controller.cli.registry` (0 ok, 1 invalid, 2 usage, 3 infrastructure,
4 conflict, 70 internal, 130 interrupted).

Output goes to stdout (``-o table|wide|json|yaml|name``); progress and errors go to stderr.
Time model: ``AGE`` is computed from the injected wall clock; nothing else reads a clock.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from types import UnionType
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from oab.controller.base.errors import AwsError, OabError
from oab.controller.cli import (
    config,
    get,
    init,
    logs,
    manifests,
    ops,
    scale,
    snapshot,
    trace,
    wait,
)
from oab.controller.cli import exec as exec_
from oab.controller.cli.context import Context
from oab.controller.cli.registry import (
    EXIT_CONFLICT,
    EXIT_INFRA,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    UsageError,
    index,
)
from oab.controller.core.settings import Settings, SettingsError

__all__ = ["GROUPS", "PLUGIN_GROUP", "build_parser", "commands", "exit_code_for", "main"]

#: The command groups of ``oabctl``, each a module's ``COMMANDS``.
GROUPS: tuple[tuple[Command, ...], ...] = (
    init.COMMANDS,
    manifests.COMMANDS,
    get.COMMANDS,
    config.COMMANDS,
    wait.COMMANDS,
    ops.COMMANDS,
    logs.COMMANDS,
    trace.COMMANDS,
    snapshot.COMMANDS,
    exec_.COMMANDS,
    scale.COMMANDS,
)
#: Entry-point group of command plugins (pyproject: ``oabctl local`` from the local tooling).
PLUGIN_GROUP = "oabctl.commands"


def _global_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    g = parser.add_argument_group("global options")
    g.add_argument("--profile", default=default, help="settings profile (~/.oabctl/config)")
    g.add_argument("--config", default=default, help="settings file (default $OABCTL_CONFIG)")
    g.add_argument("--region", default=default, help="AWS region")
    g.add_argument("--bucket", default=default, help="control-plane bucket")
    g.add_argument("--table-prefix", default=default, help="prefix of the control-plane tables")
    g.add_argument("--cluster", default=default, help="ECS cluster")
    g.add_argument("--endpoint", default=default, help="AWS endpoint override (local emulator)")
    g.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks of errors"
    )


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises instead of exiting, so main() owns every exit code."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}")


def _plugin_commands() -> list[Command]:
    """The commands of the ``oabctl.commands`` entry points (each names a module whose
    ``COMMANDS`` lists them)."""
    found: list[Command] = []
    for plugin in entry_points(group=PLUGIN_GROUP):
        offered = getattr(plugin.load(), "COMMANDS", None)
        if not isinstance(offered, tuple) or not all(isinstance(c, Command) for c in offered):
            raise TypeError(f"oabctl plugin {plugin.value!r} has no COMMANDS tuple of Command")
        found.extend(offered)
    return found


def commands() -> Mapping[str, Command]:
    """Every ``oabctl`` command by name: :data:`GROUPS`, then the plugins."""
    return index([*(c for group in GROUPS for c in group), *_plugin_commands()])


def build_parser() -> argparse.ArgumentParser:
    """The full parser: global options (accepted before or after the command) + every command."""
    parser = _Parser(prog="oabctl", description="Declarative OpenAB agents on Amazon ECS.")
    _global_options(parser, default=None)
    common = _Parser(add_help=False)
    _global_options(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in sorted(commands().values(), key=lambda c: c.name):
        p = sub.add_parser(cmd.name, help=cmd.help, aliases=list(cmd.aliases), parents=[common])
        p.set_defaults(_command=cmd)
        cmd.configure(p)
    return parser


def exit_code_for(exc: BaseException) -> int:
    """The one mapping from an error to an exit code (see the module doc)."""
    from oab.controller.adapters.changes import ChangeLogError
    from oab.controller.adapters.objectstore import StorageError
    from oab.controller.adapters.store import (
        ConflictError,
        DocumentTooLarge,
        InvalidStoredObject,
        NameCollisionError,
        NotFoundError,
        OwnershipError,
    )
    from oab.controller.api.issues import InvalidDocument
    from oab.controller.api.manifests import ManifestError
    from oab.controller.cli.init import InitError

    invalid = ManifestError | InvalidDocument | SettingsError | NotFoundError
    stored = InvalidStoredObject | DocumentTooLarge  # someone must replace or shrink it
    aws = AwsError | ClientError | BotoCoreError
    table: tuple[tuple[type[BaseException] | UnionType, int], ...] = (
        (KeyboardInterrupt, EXIT_INTERRUPTED),
        (UsageError, EXIT_USAGE),
        (invalid | stored | OwnershipError | NameCollisionError, EXIT_INVALID),
        (ConflictError, EXIT_CONFLICT),
        (StorageError | InitError | ChangeLogError | aws, EXIT_INFRA),
    )
    for kinds, code in table:
        if isinstance(exc, kinds):
            return code
    if isinstance(exc, OabError):
        return EXIT_INFRA if exc.retryable else EXIT_INVALID
    return EXIT_INTERNAL


#: Control characters (from hostile or mistyped YAML keys) are shown escaped, one line each.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


def _error_lines(exc: BaseException, settings: Settings | None) -> list[str]:
    return [line.translate(_CONTROL) for line in _raw_error_lines(exc, settings)]


def _raw_error_lines(exc: BaseException, settings: Settings | None) -> list[str]:
    from oab.controller.api.manifests import ManifestError

    if isinstance(exc, ManifestError):
        return [f"error: {issue}" for issue in exc.issues]
    if isinstance(exc, KeyboardInterrupt):
        return ["interrupted"]
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, EndpointConnectionError):
        cause = cause.__cause__
    if cause is not None:
        exc = cause
    if isinstance(exc, EndpointConnectionError):
        where = settings.endpoint if settings and settings.endpoint else "AWS"
        return [
            f"error: cannot reach {where}: {exc}; is `oabctl local up` running, "
            "or are --endpoint/AWS_ENDPOINT_URL right?"
        ]
    text = str(exc) or type(exc).__name__
    if exit_code_for(exc) == EXIT_INTERNAL:
        return [f"internal error: {type(exc).__name__}: {text} (rerun with --debug and report it)"]
    return [f"error: {line}" for line in text.split("\n")]


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``oabctl`` with ``argv``; returns the exit code (the console script exits with it)."""
    o, e, i = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    from oab.controller.observability.logscrub import install_root

    install_root(stream=e)  # library warnings reach stderr as before, but scrubbed
    argv = list(sys.argv[1:] if argv is None else argv)
    ctx: Context | None = None
    debug = "--debug" in argv
    try:
        parser = build_parser()
        if not argv or argv in (["-h"], ["--help"]):
            parser.print_help(o)
            return EXIT_OK if argv else EXIT_USAGE
        args = parser.parse_args(argv)
        if getattr(args, "_command", None) is None:
            raise UsageError("oabctl: a command is required (see oabctl --help)")
        ctx = Context(args, stdout=o, stderr=e, stdin=i, env=env)
        from oab.controller.observability.telemetry import command_span

        with command_span(args._command.name, env=env):
            code = int(args._command.run(ctx))
        o.flush()
        return code
    except SystemExit as exc:  # argparse's --help inside a subcommand
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    except BaseException as exc:
        settings = None
        if ctx is not None and "settings" in ctx.__dict__:
            settings = ctx.settings
        for line in _error_lines(exc, settings):
            e.write(line + "\n")
        if debug:
            traceback.print_exception(exc, file=e)
        return exit_code_for(exc)


if __name__ == "__main__":
    sys.exit(main())
