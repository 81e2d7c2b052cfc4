"""``oabctl apply``, ``delete``, ``diff``, ``render`` and ``schema``: manifests in, stored out.

Design
------
- ``apply`` validates every document of every file, then renders every agent as the controller
  will (roles, secrets, ``bootstrapFrom``, sizes: :func:`oab.controller.core.render.preflight`),
  then checks ownership and name collisions of every target, and only then writes (all or
  nothing up to S3's lack of multi-object transactions: see :mod:`oab.controller.adapters.store`).
- ``delete`` writes tombstones; the controller cleans ECS up and removes them.
- ``diff`` compares with the stored desired state (``--rendered``: config.toml and the task
  definition too) and exits 1 when anything differs.
- ``schema``, ``version`` and ``convert`` make no AWS call; ``render`` makes none either, except
  that it reads an ``oab.dev/v2`` ``configFrom: s3://`` object (to show it under ``configToml``).
- ``apply``, ``diff`` and ``render`` print each ``spec.config`` warning (a key OpenAB's modelled
  release does not know, kept verbatim; an id OpenAB never matches) to stderr as
  ``Warning: ...``; ``--strict`` makes them errors (exit 1, nothing written).
- Either apiVersion is accepted everywhere (:mod:`oab.controller.api.v2` converts ``oab.dev/v2``
  to the internal model at load). ``apply``/``diff`` resolve ``aws-sm://NAME#KEY`` secrets with
  ``DescribeSecret``; ``render`` needs the full ARN form. ``convert`` rewrites a file between
  the two versions and names every field the target cannot express (exit 1; ``--force`` drops
  them with a warning on stderr).

Time model: none (stamps are the store's, from the context's wall clock).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from oab.controller.base.names import resource_name
from oab.controller.cli import output as out
from oab.controller.cli.common import (
    add_files,
    add_namespace,
    add_output,
    split_target,
)
from oab.controller.cli.context import Context
from oab.controller.cli.registry import EXIT_INVALID, EXIT_OK, Command, UsageError, command


def _add_strict(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strict",
        action="store_true",
        help="treat spec.config warnings (unknown keys, ids OpenAB never matches) as errors",
    )


def _warnings_of(svc: Any) -> list[Any]:
    """The config warnings of one agent: of ``spec.config``, or of its verbatim ``configToml``
    (an ``oab.dev/v2`` ``configFrom`` file; an ``s3://`` one is checked where it is read)."""
    from oab.controller.api.openab import check_config_toml, config_warnings

    if svc.spec.config is not None:
        return config_warnings(svc.spec.config)
    if svc.spec.config_toml is not None:
        # Already checked at load; only its warnings are wanted here.
        return list(check_config_toml(svc.spec.config_toml, source="", strict=False).warnings)
    return []


def _config_warnings(ctx: Context, docs: list[Any]) -> None:
    """Print every spec.config warning as ``Warning: ...``; with ``--strict``, refuse them."""
    from dataclasses import replace

    from oab.controller.api.fleet import OABFleet, blame_fleet_issue
    from oab.controller.api.issues import FieldIssue
    from oab.controller.api.manifests import ManifestError

    found = []
    for doc in docs:
        seen: set[tuple[str, str]] = set()
        for i, svc in enumerate(_services_of(doc.obj)):
            for warning in _warnings_of(svc):
                issue = FieldIssue(("spec", "config", *warning.path), warning.message, warning.hint)
                if isinstance(doc.obj, OABFleet):
                    issue = blame_fleet_issue(doc.obj, i, issue)
                if (issue.dotted, issue.message) not in seen:  # fleet defaults: once
                    seen.add((issue.dotted, issue.message))
                    found.append(doc.issue(issue.dotted, issue.message, issue.hint))
    if found and getattr(ctx.args, "strict", False):
        raise ManifestError([replace(i, message=f"{i.message} (--strict)") for i in found])
    for issue in found:
        ctx.stderr.write(f"Warning: {issue}\n")


def load_manifests(ctx: Context, *, resolve_secrets: bool = False) -> list[Any]:
    """Every document of ``-f``, validated and converted (all or nothing).

    ``resolve_secrets``: resolve ``aws-sm://NAME#KEY`` references with ``DescribeSecret``.
    """
    from oab.controller.api.manifests import load_paths
    from oab.controller.api.v2 import ConversionContext

    resolver = _secret_resolver(ctx) if resolve_secrets else None
    docs: list[Any] = load_paths(
        ctx.args.filename, stdin=ctx.stdin, context=ConversionContext(resolve_secret=resolver)
    )
    return docs


def _secret_resolver(ctx: Context) -> Any:
    """``DescribeSecret(SecretId=NAME).ARN`` (upstream oabctl's resolution), cached per run."""
    cache: dict[str, str] = {}

    def resolve(secret_id: str) -> str:
        if secret_id not in cache:
            try:
                resp = ctx.client("secretsmanager").describe_secret(SecretId=secret_id)
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
                raise LookupError(f"DescribeSecret {secret_id!r} failed: {code}") from exc
            cache[secret_id] = str(resp["ARN"])
        return cache[secret_id]

    return resolve


def _with_configs(ctx: Context, svc: Any) -> Any:
    """``svc`` with its ``configFrom: s3://`` text read (apply/render check it as the controller
    will read it); unchanged without one."""
    from oab.controller.adapters.configsource import ConfigObjects, with_config_text

    if svc.spec.config_from is None:
        return svc
    configs = ConfigObjects(ctx.client("s3"), control_plane_bucket=ctx.settings.bucket)
    return with_config_text(svc, configs)


def _configure_apply(p: argparse.ArgumentParser) -> None:
    add_files(p, required=True)
    p.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    _add_strict(p)


@command(
    "apply", help="create or update agents and fleets from manifests", configure=_configure_apply
)
def _apply(ctx: Context) -> int:
    from oab.controller.adapters.store import NameCollisionError, OwnershipError, desired_from
    from oab.controller.api.manifests import LoadedDocument, ManifestError, services_of
    from oab.controller.api.service import OABService

    # Validates every document of every file before anything is written.
    docs = load_manifests(ctx, resolve_secrets=True)
    _config_warnings(ctx, docs)
    # Then renders every agent as the controller will (no AWS call): all or nothing.
    rctx = render_context_for(ctx, use_bucket=False)
    refused = [issue for doc in docs for issue in _preflight_issues(doc, rctx, ctx)]
    if refused:
        raise ManifestError(refused)
    store = ctx.store()
    plans: list[tuple[Any, list[Any]]] = []
    origin: dict[str, tuple[LoadedDocument, str]] = {}  # object key -> (document, field path)
    for doc in docs:
        desired = desired_from(doc.obj)
        children = (
            []
            if isinstance(doc.obj, OABService)
            else [desired_from(c) for c in services_of(doc.obj)]
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


def _configure_delete(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="*", metavar="[TYPE] NAME", help="oabservice|oabfleet, name")
    add_namespace(p)
    add_files(p, required=False)
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
        for doc in load_manifests(ctx, resolve_secrets=False):
            targets.append((doc.obj.kind, doc.obj.metadata.namespace, doc.obj.metadata.name))
    else:
        kind, name = split_target(ctx.args.target)
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


def _configure_diff(p: argparse.ArgumentParser) -> None:
    add_files(p, required=True)
    p.add_argument(
        "--rendered", action="store_true", help="also diff config.toml and the ECS requests"
    )
    _add_strict(p)


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


def render_context_for(ctx: Context, *, use_bucket: bool) -> Any:
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


def _preflight_issues(doc: Any, rctx: Any, ctx: Context) -> list[Any]:
    """Render every agent of one loaded document as the controller will; one issue per refusal.

    Roles (IAM limits and the tenant boundary), secrets, ``bootstrapFrom`` and the task
    definition's size are checked here, at apply, and again by the controller at every reconcile
    (a stored manifest that breaks them parks its agent with the same message).
    """
    from oab.controller.api.fleet import OABFleet, blame_fleet_issue
    from oab.controller.api.issues import FieldIssue, parse_field_path
    from oab.controller.api.manifests import services_of
    from oab.controller.api.v2 import V2Fleet
    from oab.controller.base.errors import TerminalError
    from oab.controller.core.render import RenderError, preflight

    issues: list[Any] = []
    for index, svc in enumerate(services_of(doc.obj)):
        try:
            preflight(_with_configs(ctx, svc), rctx)
        except RenderError as exc:
            in_manifest = exc.field.split(".", 1)[0] in ("spec", "metadata")
            path = parse_field_path(exc.field) if in_manifest else ("spec",)
            message = exc.problem if in_manifest else f"{exc.field}: {exc.problem}"
            issue = FieldIssue(path, message, exc.hint)
            if isinstance(doc.obj, OABFleet):
                issue = blame_fleet_issue(doc.obj, index, issue)
            elif isinstance(doc.obj, V2Fleet) and issue.path[:1] == ("spec",):
                issue = FieldIssue(("spec", "agents", index, *issue.path[1:]), *issue_text(issue))
            issues.append(doc.issue(issue.dotted, issue.message, issue.hint))
        except TerminalError as exc:  # the configFrom object is missing or invalid
            where = f"spec.agents[{index}].configFrom" if isinstance(doc.obj, V2Fleet) else ""
            issues.append(doc.issue(where or "spec.configFrom", str(exc)))
    return issues


def issue_text(issue: Any) -> tuple[str, str | None]:
    """``(message, hint)`` of a field issue."""
    return issue.message, issue.hint


def _rendered_texts(svc: Any, rctx: Any) -> dict[str, str]:
    from oab.controller.core.render import render_agent

    rendered = render_agent(svc, rctx)
    return {
        "config.toml": rendered.config_toml,
        "task-definition.json": json.dumps(rendered.task_definition, indent=2, sort_keys=True),
    }


def _services_of(doc_obj: Any) -> Iterator[Any]:
    from oab.controller.api.manifests import services_of

    yield from services_of(doc_obj)


@command(
    "diff",
    help="compare manifests with the stored desired state (exit 1 if different)",
    configure=_configure_diff,
)
def _diff(ctx: Context) -> int:
    from oab.controller.adapters.store import desired_from
    from oab.controller.api.document import parse_document
    from oab.controller.api.service import OABService

    docs = load_manifests(ctx, resolve_secrets=True)
    _config_warnings(ctx, docs)
    store = ctx.store()
    rctx = render_context_for(ctx, use_bucket=True) if ctx.args.rendered else None
    differs = False
    for doc in docs:
        objects: list[Any] = [doc.obj]
        if not isinstance(doc.obj, OABService):
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
                    before = _rendered_texts(_with_configs(ctx, stored_svc), rctx)
            # The new generation is what an apply would store: same if the spec is unchanged.
            next_gen = (stored.generation if stored and live else 0) + (0 if not text else 1)
            renderable = obj.model_copy(
                update={
                    "metadata": obj.metadata.model_copy(update={"generation": max(1, next_gen)})
                }
            )
            after = _rendered_texts(_with_configs(ctx, renderable), rctx)
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


def _configure_render(p: argparse.ArgumentParser) -> None:
    add_files(p, required=True)
    add_output(p, ["yaml", "json"])
    _add_strict(p)


@command(
    "render", help="print what the controller would write (no AWS)", configure=_configure_render
)
def _render(ctx: Context) -> int:
    from oab.controller.core.render import render_agent

    rctx = render_context_for(ctx, use_bucket=False)
    docs = load_manifests(ctx)
    _config_warnings(ctx, docs)
    rendered = [
        render_agent(_with_configs(ctx, svc), rctx).to_dict()
        for doc in docs
        for svc in _services_of(doc.obj)
    ]
    payload: object = rendered[0] if len(rendered) == 1 else out.as_list(rendered)
    if ctx.output is out.OutputFormat.JSON:
        ctx.print(out.to_json(payload))
    else:
        ctx.print(out.to_yaml(payload).rstrip("\n"))
    return EXIT_OK


def _configure_schema(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api-version",
        choices=["oab.dev/v1", "oab.dev/v2"],
        default="oab.dev/v1",
        help="which manifest version (default oab.dev/v1)",
    )


@command(
    "schema", help="print the JSON Schema of oab.dev/v1|v2 manifests", configure=_configure_schema
)
def _schema(ctx: Context) -> int:
    # Imported by name: mypy resolves `oab.controller.api.schema` to the data folder `schema/` (a
    # namespace package) instead of schema.py, which the runtime picks.
    schema = importlib.import_module("oab.controller.api.schema")
    text: str = schema.schema_json(ctx.args.api_version)
    ctx.print(text.rstrip("\n"))
    return EXIT_OK


@command("version", help="print oabctl's version and the OpenAB release it speaks")
def _version(ctx: Context) -> int:
    from importlib.metadata import PackageNotFoundError, version

    from oab.controller.api.openab import OPENAB_CONFIG_SOURCE, OPENAB_RELEASE

    try:
        own = version("oab-controller")
    except PackageNotFoundError:  # running from a source tree without metadata
        own = "unknown"
    ctx.print(f"oabctl {own}\nOpenAB {OPENAB_RELEASE} (config.toml model: {OPENAB_CONFIG_SOURCE})")
    return EXIT_OK


def _configure_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", required=True, help="the manifest file to convert")
    p.add_argument("--to", required=True, choices=["oab.dev/v1", "oab.dev/v2"], dest="to")
    p.add_argument(
        "--force", action="store_true", help="drop what the target cannot express (warns)"
    )


@command(
    "convert",
    help="rewrite a manifest file as oab.dev/v1 or oab.dev/v2 (names what cannot be converted)",
    configure=_configure_convert,
)
def _convert(ctx: Context) -> int:
    """Convert each document of one file; no AWS call.

    Every document is first validated as ``apply`` would (so the output is a valid manifest).
    Fields the target version cannot express are listed on stderr: exit 1, unless ``--force``,
    which drops them with a warning per field.
    """
    from oab.controller.api.manifests import load_paths
    from oab.controller.api.v2 import ConversionContext
    from oab.controller.api.v2_convert import convert_documents

    # Resolving aws-sm:// names is not needed: the conversion keeps the written references.
    load_paths([ctx.args.filename], stdin=ctx.stdin, context=ConversionContext())
    result = convert_documents(ctx.args.filename, to=ctx.args.to)
    for field_path in result.dropped:
        verb = "dropped" if ctx.args.force else "cannot be expressed in"
        ctx.progress(f"{ctx.args.filename}: {field_path}: {verb} {ctx.args.to}")
    if result.dropped and not ctx.args.force:
        ctx.progress("nothing written; convert with --force to drop these fields")
        return EXIT_INVALID
    ctx.print(result.text.rstrip("\n"))
    return EXIT_OK


#: This group's commands, in the order ``oabctl --help`` lists them (sorted there by name).
COMMANDS: tuple[Command, ...] = (
    _apply,
    _delete,
    _diff,
    _render,
    _schema,
    _version,
    _convert,
)
