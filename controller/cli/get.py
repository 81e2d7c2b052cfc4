"""``oabctl get``: agents or fleets with their phase, work unit and why one needs a person.

Design: one ``list`` of the store plus one BatchGetItem per 50 agents (status and work unit);
an unreadable status item or queue row is shown with its reason, never fails the listing.

Time model: ``AGE`` from the context's injected wall clock.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from oab.controller.base.names import resource_name, status_partition_key
from oab.controller.cli import output as out
from oab.controller.cli.common import (
    add_namespace,
    add_output,
    split_target,
)
from oab.controller.cli.context import Context
from oab.controller.cli.registry import EXIT_OK, Command, command


def _configure_get(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="*", metavar="[TYPE] [NAME]", help="oabservice|oabfleet, name")
    add_namespace(p, all_namespaces=True)
    add_output(p, ["wide", "json", "yaml", "name"])


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
    by_pk = {status_partition_key(k): k for k in keys}
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


def _next_transition(ctx: Context, spec: Mapping[str, Any]) -> str | None:
    """``0@2027-03-14T07:00:00Z`` from spec.schedules and the clock (cli/scale.py)."""
    from oab.controller.cli.scale import schedule_view

    view = schedule_view(spec, ctx.wall_clock())
    return f"{view['nextReplicas']}@{view['nextAt']}" if view and view["nextAt"] else None


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
        out.Column("NEXT-TRANSITION", lambda r: _next_transition(ctx, r[0].spec), wide_only=True),
        out.Column("LAST-RECONCILED", lambda r: st(r).last_reconciled or None, wide_only=True),
        out.Column("WORK", lambda r: _work(r[2]), wide_only=True),
        out.Column("REASON", lambda r: _attention(r[1], r[2]), wide_only=True),
        out.Column("WEBHOOKS", lambda r: ",".join(st(r).webhook_urls) or None, wide_only=True),
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

    kind, name = split_target(ctx.args.target)
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
        from oab.controller.api.v2 import applied_view
        from oab.controller.core.status import unreadable_json
        from oab.controller.core.stored import UnreadableItem

        obj, status, unit = row
        doc = applied_view(obj.document) or dict(obj.document)  # oab.dev/v2: as applied
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


#: This group's commands, in the order ``oabctl --help`` lists them (sorted there by name).
COMMANDS: tuple[Command, ...] = (_get,)
