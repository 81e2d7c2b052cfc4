"""``oabctl``: the command-line client, with kubectl's conventions.

Design
------
- **Registry.** Every subcommand is a :class:`Command` (name, help, how to add its arguments,
  how to run) registered with :func:`command`. Built-in commands live in this module; later
  ones live in their own modules listed in :data:`EXTENSION_MODULES`, which are imported before
  the parser is built and call :func:`command` at import time. Adding a command never touches
  the parser code.
- **Context.** A command receives one :class:`Context`: parsed arguments, settings (flags >
  env > ``~/.oabctl/config`` profile, see :mod:`oab.controller.core.settings`), lazily built boto3
  clients (``oab.controller.adapters.aws.make_client``; built once, only when a command needs AWS,
  so ``render`` and ``schema`` never touch it), the output format and the three streams.
- **Errors.** Commands raise; :func:`exit_code_for` is the single place mapping errors to exit
  codes and :func:`main` prints one line per problem on stderr (file, field path, fix), never a
  traceback for an expected error (``--debug`` adds it).

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

Output goes to stdout (``-o table|wide|json|yaml|name``); progress and errors go to stderr.
Time model: ``AGE`` is computed from the injected wall clock; nothing else reads a clock.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from oab.controller.base.errors import AwsError, OabError
from oab.controller.base.names import resource_name
from oab.controller.cli import output as out
from oab.controller.core.settings import Settings, SettingsError, load_settings

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_INFRA",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXTENSION_MODULES",
    "Command",
    "Context",
    "command",
    "exit_code_for",
    "main",
]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INFRA = 3
EXIT_CONFLICT = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

#: Modules that register more commands at import time (the lead adds wait, logs, restart, ...).
EXTENSION_MODULES: tuple[str, ...] = (
    "oab.controller.cli.wait",
    "oab.controller.cli.ops",
    "oab.controller.cli.logs",
    "oab.controller.cli.trace",
    "oab.controller.cli.snapshot",
)

_SERVICE_TYPES = frozenset({"oabservice", "oabservices", "oabsvc", "oabsvcs"})
_FLEET_TYPES = frozenset({"oabfleet", "oabfleets", "fleet", "fleets"})


# ------------------------------------------------------------------------------ framework


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


class UsageError(OabError):
    """Bad command-line usage (exit 2)."""

    reason = "Usage"


class LocalAwsError(OabError):
    """The embedded emulator did not start (port taken, moto missing): exit 3."""

    retryable = True
    reason = "LocalAwsUnavailable"


class Context:
    """What a command works with: arguments, settings, lazily built clients, output, streams."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        stdout: TextIO,
        stderr: TextIO,
        stdin: TextIO,
        env: Mapping[str, str] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.args = args
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.env = env
        self.wall_clock = wall_clock
        self._clients: dict[str, Any] = {}

    @cached_property
    def settings(self) -> Settings:
        """Settings merged from flags > env > file profile (validated once)."""
        flags = {
            "profile": getattr(self.args, "profile", None),
            "region": getattr(self.args, "region", None),
            "bucket": getattr(self.args, "bucket", None),
            "table_prefix": getattr(self.args, "table_prefix", None),
            "cluster": getattr(self.args, "cluster", None),
            "endpoint": getattr(self.args, "endpoint", None),
        }
        config = getattr(self.args, "config", None)
        from pathlib import Path

        return load_settings(flags, env=self.env, path=Path(config) if config else None)

    @property
    def output(self) -> out.OutputFormat:
        """The ``-o`` format (table when the command has no ``-o``)."""
        return out.OutputFormat(getattr(self.args, "output", None) or "table")

    def client(self, service: str) -> Any:
        """A boto3 client for ``service``, built once per context."""
        if service not in self._clients:
            from oab.controller.adapters.aws import make_client, make_session

            if "session" not in self._clients:
                self._clients["session"] = make_session(
                    region=self.settings.region,
                    profile=self.settings.aws_profile,
                    principal="oabctl",
                    env=self.env,
                )
            self._clients[service] = make_client(
                self._clients["session"], service, endpoint_url=self.settings.endpoint
            )
        return self._clients[service]

    def store(self) -> Any:
        """The desired-state store on the settings' bucket, recording change records."""
        from oab.controller.adapters.changes import ChangeLog
        from oab.controller.adapters.store import DesiredStateStore, S3ObjectStore

        changes = ChangeLog(
            self.client("dynamodb"), self.settings.tables.state, wall_clock=self.wall_clock
        )
        return DesiredStateStore(
            S3ObjectStore(self.client("s3"), self.settings.bucket),
            changes=changes,
            wall_clock=self.wall_clock,
        )

    def print(self, text: str) -> None:
        """Write a result line (or block) to stdout."""
        out.emit(text, self.stdout)

    def progress(self, message: str) -> None:
        """Progress for long work: stderr, never mixed into results."""
        self.stderr.write(message + "\n")
        self.stderr.flush()


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


def build_parser() -> argparse.ArgumentParser:
    """The full parser: global options (accepted before or after the command) + every command."""
    for module in EXTENSION_MODULES:
        importlib.import_module(module)
    parser = _Parser(prog="oabctl", description="Declarative OpenAB agents on Amazon ECS.")
    _global_options(parser, default=None)
    common = _Parser(add_help=False)
    _global_options(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in sorted(_REGISTRY.values(), key=lambda c: c.name):
        p = sub.add_parser(cmd.name, help=cmd.help, aliases=list(cmd.aliases), parents=[common])
        p.set_defaults(_command=cmd)
        cmd.configure(p)
    return parser


def exit_code_for(exc: BaseException) -> int:
    """The one mapping from an error to an exit code (see the module doc)."""
    from oab.controller.adapters.changes import ChangeLogError
    from oab.controller.adapters.store import (
        ConflictError,
        DocumentTooLarge,
        InvalidStoredObject,
        NameCollisionError,
        NotFoundError,
        OwnershipError,
        StorageError,
    )
    from oab.controller.api.manifests import ManifestError
    from oab.controller.api.service import InvalidDocument
    from oab.controller.cli.init import InitError

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    invalid = ManifestError | InvalidDocument | SettingsError | NotFoundError
    stored = InvalidStoredObject | DocumentTooLarge  # someone must replace or shrink it
    if isinstance(exc, invalid | stored | OwnershipError | NameCollisionError):
        return EXIT_INVALID
    if isinstance(exc, ConflictError):
        return EXIT_CONFLICT
    if isinstance(exc, StorageError | InitError | ChangeLogError):
        return EXIT_INFRA
    if isinstance(exc, AwsError | ClientError | BotoCoreError):
        return EXIT_INFRA
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


# ------------------------------------------------------------------------ shared helpers


def _add_namespace(p: argparse.ArgumentParser, *, all_namespaces: bool = False) -> None:
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    if all_namespaces:
        p.add_argument(
            "-A", "--all-namespaces", action="store_true", help="list across all namespaces"
        )


def _add_output(p: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    p.add_argument("-o", "--output", choices=list(choices), default=None, help="output format")


def _add_files(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        required=required,
        metavar="FILE|DIR|-",
        help="manifest file, directory of *.yaml, or - for stdin (repeatable)",
    )


def _split_target(words: Sequence[str]) -> tuple[str, str | None]:
    """``[TYPE] [NAME]`` -> (kind, name); a lone word that is not a type is a service name."""
    if not words:
        return "OABService", None
    first = words[0].lower().split(".", 1)[0]
    if first in _FLEET_TYPES or first in _SERVICE_TYPES:
        kind = "OABFleet" if first in _FLEET_TYPES else "OABService"
        if len(words) > 2:
            raise UsageError(f"expected [TYPE] [NAME], got {' '.join(words)}")
        return kind, words[1] if len(words) == 2 else None
    if len(words) > 1:
        raise UsageError(f"unknown resource type {words[0]!r}; use oabservice or oabfleet")
    return "OABService", words[0]


def _load(ctx: Context) -> list[Any]:
    from oab.controller.api.manifests import load_paths

    docs: list[Any] = load_paths(ctx.args.filename, stdin=ctx.stdin)
    return docs


# --------------------------------------------------------------------------------- init


@command("init", help="create or verify the bucket, tables and ECS cluster (idempotent)")
def _init(ctx: Context) -> int:
    from oab.controller.cli.init import init

    report = init(
        ctx.settings,
        s3=ctx.client("s3"),
        dynamodb=ctx.client("dynamodb"),
        ecs=ctx.client("ecs"),
        ec2=ctx.client("ec2"),
        sts=ctx.client("sts"),
        wall_clock=ctx.wall_clock,
        progress=ctx.progress,
    )
    for step in report.steps:
        ctx.print(step.line())
    return EXIT_OK


# -------------------------------------------------------------------------------- apply


def _configure_apply(p: argparse.ArgumentParser) -> None:
    _add_files(p, required=True)
    p.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")


@command(
    "apply", help="create or update agents and fleets from manifests", configure=_configure_apply
)
def _apply(ctx: Context) -> int:
    from oab.controller.adapters.store import NameCollisionError, OwnershipError, desired_from
    from oab.controller.api.manifests import LoadedDocument, ManifestError
    from oab.controller.api.service import OABFleet, expand_fleet

    docs = _load(ctx)  # validates every document of every file before anything is written
    # Then renders every agent as the controller will (no AWS call): all or nothing.
    rctx = _render_context(ctx, use_bucket=False)
    refused = [issue for doc in docs for issue in _preflight_issues(doc, rctx)]
    if refused:
        raise ManifestError(refused)
    store = ctx.store()
    plans: list[tuple[Any, list[Any]]] = []
    origin: dict[str, tuple[LoadedDocument, str]] = {}  # object key -> (document, field path)
    for doc in docs:
        desired = desired_from(doc.obj)
        children = (
            [desired_from(c) for c in expand_fleet(doc.obj)]
            if isinstance(doc.obj, OABFleet)
            else []
        )
        plans.append((desired, children))
        origin[desired.key] = (doc, "metadata.name")
        origin.update({c.key: (doc, "spec.agents") for c in children})
    try:
        store.preflight([d for d, children in plans if d.kind == "OABService"])
        store.preflight([c for _d, children in plans for c in children])
    except (OwnershipError, NameCollisionError) as exc:
        # Name the file and field the refused object came from, like any other input error.
        doc, path = origin[exc.key]
        raise ManifestError([doc.issue(path, str(exc))]) from exc
    suffix = " (dry run)" if ctx.args.dry_run else ""
    for desired, children in plans:
        if desired.kind == "OABFleet":
            results = store.apply_fleet(desired, children, dry_run=ctx.args.dry_run)
        else:
            results = [store.apply(desired, dry_run=ctx.args.dry_run)]
        for r in results:
            ctx.print(f"{resource_name(r.kind)}/{r.name} {r.outcome}{suffix}")
    return EXIT_OK


# ---------------------------------------------------------------------------------- get


def _configure_get(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="*", metavar="[TYPE] [NAME]", help="oabservice|oabfleet, name")
    _add_namespace(p, all_namespaces=True)
    _add_output(p, ["wide", "json", "yaml", "name"])


def _read_units(ctx: Context, keys: Sequence[str]) -> dict[str, tuple[Any, Any]]:
    """Status and work unit of each agent, by key, in shared BatchGetItem requests (at most 100
    keys each, so 50 agents). A status item that does not decode reads as its
    ``UnreadableItem``, a queue row as its ``UnreadableRow``: ``get`` shows them, never fails."""
    from oab.controller.adapters.state import status_from_item, status_key
    from oab.controller.core.status import AgentStatus
    from oab.controller.core.stored import UnreadableItem
    from oab.queue.store import SORT_KEY, decode, pk_of

    tables = ctx.settings.tables
    statuses: dict[str, Any] = {k: AgentStatus(key=k) for k in keys}
    units: dict[str, Any] = dict.fromkeys(keys)
    by_pk = {f"agent#{k}": k for k in keys}
    ddb = ctx.client("dynamodb")
    for i in range(0, len(keys), 50):
        batch = keys[i : i + 50]
        request: dict[str, Any] = {
            tables.state: {"Keys": [status_key(k) for k in batch], "ConsistentRead": True},
            tables.queue: {
                "Keys": [{"pk": {"S": pk_of(k)}, "sk": {"S": SORT_KEY}} for k in batch],
                "ConsistentRead": True,
            },
        }
        while request:
            resp = ddb.batch_get_item(RequestItems=request)
            for item in resp.get("Responses", {}).get(tables.state, []):
                pk = item.get("pk")
                key = by_pk.get(str(pk.get("S", ""))) if isinstance(pk, Mapping) else None
                if key is None:
                    continue
                try:
                    statuses[key] = status_from_item(item)
                except UnreadableItem as exc:
                    statuses[key] = exc
            for item in resp.get("Responses", {}).get(tables.queue, []):
                row = decode(item)
                if row.key in units:
                    units[row.key] = row
            request = resp.get("UnprocessedKeys") or {}
    return {k: (statuses[k], units[k]) for k in keys}


def _attention(status: Any, unit: Any) -> str | None:
    """Why an agent needs a person, in one word: the unreadable item, the parked unit's reason
    or the status's Degraded reason (``-o wide`` REASON)."""
    from oab.controller.core.stored import UnreadableItem
    from oab.queue.row import State, UnreadableRow

    if isinstance(status, UnreadableItem):
        return status.reason
    if isinstance(unit, UnreadableRow):
        return "CorruptRow"
    degraded = status.condition("Degraded")
    degraded_reason = degraded.reason if degraded and degraded.status == "True" else None
    if unit is not None and unit.state is State.PARKED:
        # Parks that write no status say why in the row's error, which starts with the reason.
        head = (unit.last_error or "").split(":", 1)[0]
        return head if head in _ROW_REASONS else degraded_reason or "Parked"
    return degraded_reason


#: Reasons of parks that leave the status untouched (bad data: see README).
_ROW_REASONS = frozenset({"CorruptRow", "CorruptStatus", "CommitRejected", "InvalidKey"})


def _work(unit: Any) -> str | None:
    from oab.queue.row import UnreadableRow

    if unit is None:
        return None
    if isinstance(unit, UnreadableRow):
        return "corrupt"
    return str(unit.state.value) + ("*" if unit.dirty else "")


def _age(ctx: Context, stamp: object) -> str:
    if not isinstance(stamp, str) or not stamp:
        return out.format_age(None)
    try:
        born = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return out.format_age(None)
    return out.format_age(ctx.wall_clock() - born.astimezone(UTC).timestamp())


def _capacity(spec: Mapping[str, Any]) -> object:
    ecs = (spec.get("platform") or {}).get("ecs") or {}
    return ecs.get("capacityProvider") or spec.get("capacityProvider")


def _service_columns(ctx: Context) -> list[out.Column]:
    from oab.controller.core.stored import UnreadableItem

    def phase(row: Any) -> str:
        obj, status, _unit = row
        if obj.deleted:
            return "Terminating"
        if isinstance(status, UnreadableItem):
            return status.reason  # kubectl's convention: a reason where no phase can be trusted
        return str(status.phase or "Pending")

    def st(row: Any) -> Any:
        """The readable status, or an empty one in place of an unreadable item."""
        from oab.controller.core.status import AgentStatus

        return AgentStatus(key="") if isinstance(row[1], UnreadableItem) else row[1]

    return [
        out.Column("NAME", lambda r: r[0].name),
        out.Column("NAMESPACE", lambda r: r[0].namespace),
        out.Column("CPU", lambda r: r[0].spec.get("cpu")),
        out.Column("MEM", lambda r: r[0].spec.get("memory")),
        out.Column("CAPACITY", lambda r: _capacity(r[0].spec)),
        out.Column("PHASE", phase),
        out.Column("GEN", lambda r: r[0].generation),
        out.Column("OBS-GEN", lambda r: st(r).observed_generation or None),
        out.Column("AGE", lambda r: _age(ctx, r[0].metadata.get("creationTimestamp"))),
        out.Column(
            "IMAGE", lambda r: (r[0].spec.get("taskDefinition") or {}).get("image"), wide_only=True
        ),
        out.Column("FLEET", lambda r: r[0].owner, wide_only=True),
        out.Column(
            "TASK-DEF",
            lambda r: st(r).task_definition_arn.rsplit("/", 1)[-1] or None,
            wide_only=True,
        ),
        out.Column("TASKS", lambda r: len(st(r).task_arns), wide_only=True),
        out.Column("LAST-RECONCILED", lambda r: st(r).last_reconciled or None, wide_only=True),
        out.Column("WORK", lambda r: _work(r[2]), wide_only=True),
        out.Column("REASON", lambda r: _attention(r[1], r[2]), wide_only=True),
    ]


def _fleet_columns(ctx: Context) -> list[out.Column]:
    return [
        out.Column("NAME", lambda r: r[0].name),
        out.Column("NAMESPACE", lambda r: r[0].namespace),
        out.Column("AGENTS", lambda r: len(r[0].spec.get("agents") or [])),
        out.Column("STATE", lambda r: "Terminating" if r[0].deleted else "Active"),
        out.Column("GEN", lambda r: r[0].generation),
        out.Column("AGE", lambda r: _age(ctx, r[0].metadata.get("creationTimestamp"))),
        out.Column(
            "MEMBERS",
            lambda r: [a.get("name") for a in r[0].spec.get("agents") or []],
            wide_only=True,
        ),
    ]


@command("get", help="list agents (or fleets) with their phase", configure=_configure_get)
def _get(ctx: Context) -> int:
    from oab.controller.adapters.store import NotFoundError, object_key

    kind, name = _split_target(ctx.args.target)
    namespace = None if ctx.args.all_namespaces else ctx.args.namespace
    store = ctx.store()
    if name is not None:
        key = object_key(kind, ctx.args.namespace, name)
        obj = store.get(key)
        if obj is None:
            raise NotFoundError(f'{resource_name(kind)} "{name}" in namespace {ctx.args.namespace}')
        objects = [obj]
    else:
        objects = store.list(namespace, kind=kind)
    if not objects:
        where = "any namespace" if namespace is None else f"{namespace} namespace"
        ctx.stderr.write(f"No resources found in {where}.\n")
        return EXIT_OK
    if kind == "OABService":
        units = _read_units(ctx, [f"{o.namespace}/{o.name}" for o in objects])
        rows = [(o, *units[f"{o.namespace}/{o.name}"]) for o in objects]
        columns = _service_columns(ctx)
    else:
        rows = [(o, None, None) for o in objects]
        columns = _fleet_columns(ctx)

    def to_object(row: Any) -> dict[str, Any]:
        from oab.controller.core.status import unreadable_json
        from oab.controller.core.stored import UnreadableItem

        obj, status, unit = row
        doc = dict(obj.document)
        if isinstance(status, UnreadableItem):
            doc["status"] = unreadable_json(f"{obj.namespace}/{obj.name}", status)
        elif status is not None:
            doc["status"] = status.to_json()
        if unit is not None:
            view = unit.as_json()
            doc["workUnit"] = {
                "state": view["state"],
                "generation": view["generation"],
                "attempts": view["attempts"],
                "lastError": view["last_error"],
            }
        return doc

    ctx.print(
        out.render_rows(
            rows,
            columns=columns,
            fmt=ctx.output,
            to_object=to_object,
            to_name=lambda r: f"{resource_name(kind)}/{r[0].name}",
            single=name is not None,
        )
    )
    return EXIT_OK


# ------------------------------------------------------------------------------- delete


def _configure_delete(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="*", metavar="[TYPE] NAME", help="oabservice|oabfleet, name")
    _add_namespace(p)
    _add_files(p, required=False)
    p.add_argument("--dry-run", action="store_true", help="show what would be deleted")


@command(
    "delete",
    help="tombstone agents or fleets (the controller cleans up)",
    configure=_configure_delete,
)
def _delete(ctx: Context) -> int:
    targets: list[tuple[str, str, str]] = []
    if ctx.args.filename:
        if ctx.args.target:
            raise UsageError("give either NAME or -f FILE, not both")
        for doc in _load(ctx):
            targets.append((doc.obj.kind, doc.obj.metadata.namespace, doc.obj.metadata.name))
    else:
        kind, name = _split_target(ctx.args.target)
        if name is None:
            raise UsageError("delete needs a NAME (or -f FILE)")
        targets.append((kind, ctx.args.namespace, name))
    store = ctx.store()
    suffix = " (dry run)" if ctx.args.dry_run else ""
    for kind, namespace, name in targets:
        if kind == "OABFleet":
            results = store.delete_fleet(namespace, name, dry_run=ctx.args.dry_run)
        else:
            results = [store.delete(kind, namespace, name, dry_run=ctx.args.dry_run)]
        for r in results:
            note = " (already terminating)" if r.outcome == "unchanged" else ""
            ctx.print(f'{resource_name(r.kind)} "{r.name}" deleted{note}{suffix}')
    return EXIT_OK


# --------------------------------------------------------------------------------- diff


def _configure_diff(p: argparse.ArgumentParser) -> None:
    _add_files(p, required=True)
    p.add_argument(
        "--rendered", action="store_true", help="also diff config.toml and the ECS requests"
    )


def _comparable(labels: Mapping[str, str], annotations: Mapping[str, str], spec: Any) -> str:
    meta: dict[str, Any] = {}
    if labels:
        meta["labels"] = dict(sorted(labels.items()))
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return out.to_yaml({"metadata": meta, "spec": spec})


def _unified(old: str, new: str, *, old_name: str, new_name: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=old_name,
        tofile=new_name,
    )
    return "".join(lines).rstrip("\n")


def _render_context(ctx: Context, *, use_bucket: bool) -> Any:
    """Renderer settings: oabctl settings, then (``use_bucket``) the profile ``init`` stored.

    Without a known account (no ``account`` setting, no profile read, not the local emulator)
    role ARNs use a stand-in account, which the tenant checks then do not compare (the
    controller, which knows its account, does), as a warning on stderr says.
    """
    from oab.controller.adapters.clusterprofile import read_cluster_profile
    from oab.controller.core.clusterprofile import render_context

    settings = ctx.settings
    profile = read_cluster_profile(ctx.client("s3"), settings.bucket) if use_bucket else None
    account = settings.account or (profile.account if profile else None)
    known = True
    if account is None:
        # The local emulator's account is fixed; elsewhere say that the ARNs are placeholders.
        account = "123456789012"
        known = settings.is_local
        if not known:
            ctx.progress(
                "warning: AWS account unknown (set `account` in the profile or OAB_ACCOUNT); "
                f"role ARNs use {account} and their account is checked only by the controller"
            )
    return render_context(settings, profile, account=account, account_known=known)


def _preflight_issues(doc: Any, rctx: Any) -> list[Any]:
    """Render every agent of one loaded document as the controller will; one issue per refusal.

    Roles (IAM limits and the tenant boundary), secrets, ``bootstrapFrom`` and the task
    definition's size are checked here, at apply, and again by the controller at every reconcile
    (a stored manifest that breaks them parks its agent with the same message).
    """
    from oab.controller.api.service import (
        FieldIssue,
        OABFleet,
        blame_fleet_issue,
        expand_fleet,
        parse_field_path,
    )
    from oab.controller.core.render import RenderError, preflight

    issues: list[Any] = []
    children = expand_fleet(doc.obj) if isinstance(doc.obj, OABFleet) else [doc.obj]
    for index, svc in enumerate(children):
        try:
            preflight(svc, rctx)
        except RenderError as exc:
            in_manifest = exc.field.split(".", 1)[0] in ("spec", "metadata")
            path = parse_field_path(exc.field) if in_manifest else ("spec",)
            message = exc.problem if in_manifest else f"{exc.field}: {exc.problem}"
            issue = FieldIssue(path, message, exc.hint)
            if isinstance(doc.obj, OABFleet):
                issue = blame_fleet_issue(doc.obj, index, issue)
            issues.append(doc.issue(issue.dotted, issue.message, issue.hint))
    return issues


def _rendered_texts(svc: Any, rctx: Any) -> dict[str, str]:
    from oab.controller.core.render import render_agent

    rendered = render_agent(svc, rctx)
    return {
        "config.toml": rendered.config_toml,
        "task-definition.json": json.dumps(rendered.task_definition, indent=2, sort_keys=True),
    }


def _services_of(doc_obj: Any) -> Iterator[Any]:
    from oab.controller.api.service import OABFleet, expand_fleet

    if isinstance(doc_obj, OABFleet):
        yield from expand_fleet(doc_obj)
    else:
        yield doc_obj


@command(
    "diff",
    help="compare manifests with the stored desired state (exit 1 if different)",
    configure=_configure_diff,
)
def _diff(ctx: Context) -> int:
    from oab.controller.adapters.store import desired_from
    from oab.controller.api.service import OABFleet, OABService, parse_document

    docs = _load(ctx)
    store = ctx.store()
    rctx = _render_context(ctx, use_bucket=True) if ctx.args.rendered else None
    differs = False
    for doc in docs:
        objects: list[Any] = [doc.obj]
        if isinstance(doc.obj, OABFleet):
            objects += list(_services_of(doc.obj))
        for obj in objects:
            desired = desired_from(obj)
            stored = store.get(desired.key)
            live = stored is not None and not stored.deleted
            old = _comparable(stored.labels, stored.annotations, stored.spec) if live else ""
            new = _comparable(desired.labels, desired.annotations, desired.spec)
            title = f"{resource_name(desired.kind)}/{desired.name}"
            gen = f" (generation {stored.generation})" if live and stored else " (absent)"
            text = _unified(
                old, new, old_name=f"stored/{title}{gen}", new_name=f"{doc.source}/{title}"
            )
            if text:
                differs = True
                ctx.print(text)
            if rctx is None or not isinstance(obj, OABService):
                continue
            before: dict[str, str] = {}
            if live and stored is not None:
                stored_svc = parse_document(dict(stored.document))
                if isinstance(stored_svc, OABService):
                    before = _rendered_texts(stored_svc, rctx)
            # The new generation is what an apply would store: same if the spec is unchanged.
            next_gen = (stored.generation if stored and live else 0) + (0 if not text else 1)
            renderable = obj.model_copy(
                update={
                    "metadata": obj.metadata.model_copy(update={"generation": max(1, next_gen)})
                }
            )
            after = _rendered_texts(renderable, rctx)
            for part, new_text in after.items():
                rtext = _unified(
                    before.get(part, ""),
                    new_text,
                    old_name=f"stored/{title}/{part}",
                    new_name=f"{doc.source}/{title}/{part}",
                )
                if rtext:
                    differs = True
                    ctx.print(rtext)
    return EXIT_INVALID if differs else EXIT_OK


# ------------------------------------------------------------------------------- render


def _configure_render(p: argparse.ArgumentParser) -> None:
    _add_files(p, required=True)
    _add_output(p, ["yaml", "json"])


@command(
    "render", help="print what the controller would write (no AWS)", configure=_configure_render
)
def _render(ctx: Context) -> int:
    from oab.controller.core.render import render_agent

    rctx = _render_context(ctx, use_bucket=False)
    rendered = [
        render_agent(svc, rctx).to_dict() for doc in _load(ctx) for svc in _services_of(doc.obj)
    ]
    payload: object = rendered[0] if len(rendered) == 1 else out.as_list(rendered)
    if ctx.output is out.OutputFormat.JSON:
        ctx.print(out.to_json(payload))
    else:
        ctx.print(out.to_yaml(payload).rstrip("\n"))
    return EXIT_OK


# ------------------------------------------------------------------------------- schema


@command("schema", help="print the JSON Schema of oab.dev/v1 manifests")
def _schema(ctx: Context) -> int:
    # Imported by name: mypy resolves `oab.controller.api.schema` to the data folder `schema/` (a
    # namespace package) instead of schema.py, which the runtime picks.
    schema = importlib.import_module("oab.controller.api.schema")
    text: str = schema.schema_json()
    ctx.print(text.rstrip("\n"))
    return EXIT_OK


# ------------------------------------------------------------------------------- config


def _configure_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["view"], help="view: print the effective settings")
    _add_output(p, ["yaml", "json"])


@command(
    "config",
    help="show the effective settings and where they came from",
    configure=_configure_config,
)
def _config(ctx: Context) -> int:
    from oab.controller.core.settings import config_path

    data = ctx.settings.model_dump(mode="json")
    data["configFile"] = str(
        ctx.args.config if getattr(ctx.args, "config", None) else config_path(ctx.env)
    )
    if ctx.output is out.OutputFormat.JSON:
        ctx.print(out.to_json(data))
    else:
        ctx.print(out.to_yaml(data).rstrip("\n"))
    return EXIT_OK


# -------------------------------------------------------------------------------- local


LOCAL_DEFAULT_PORT = 4566


def _configure_local(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["up"], help="up: start the embedded local AWS and init it")
    p.add_argument("--port", type=int, default=LOCAL_DEFAULT_PORT, help="port (default 4566)")
    p.add_argument(
        "--no-dataplane",
        action="store_true",
        help="do not simulate ECS tasks (by default deployments progress and tasks run)",
    )


@command("local", help="run the embedded local AWS emulator", configure=_configure_local)
def _local(ctx: Context) -> int:
    from oab.controller.local.emulator import LOCAL_ENV, start

    ctx.progress(f"starting local AWS on 127.0.0.1:{ctx.args.port} ...")
    try:
        emulator = start(port=ctx.args.port, dataplane=not ctx.args.no_dataplane)
    except RuntimeError as exc:
        raise LocalAwsError(f"cannot start local AWS on port {ctx.args.port}: {exc}") from exc
    try:
        # This process only talks to the emulator from here on: give boto3 its dummy credentials.
        emulator.apply_env()
        env = {**dict(os.environ if ctx.env is None else ctx.env), **emulator.env()}
        ctx.args.endpoint = emulator.endpoint
        ctx.env = env
        ctx.__dict__.pop("settings", None)
        code = _init(ctx)
        if code != EXIT_OK:
            return code
        ctx.print("# local AWS is up; point oabctl and boto3 at it with:")
        for key, value in {**LOCAL_ENV, "AWS_ENDPOINT_URL": emulator.endpoint}.items():
            ctx.print(f"export {key}={value}")
        ctx.stdout.flush()
        ctx.progress("press Ctrl-C to stop")
        process = emulator.process
        while process is not None and process.poll() is None:
            time.sleep(0.5)
        ctx.progress("local AWS exited")
        return EXIT_INFRA
    except KeyboardInterrupt:
        ctx.progress("stopping local AWS")
        return EXIT_OK
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
