"""``oabctl scale NAME 0|1``: suspend or resume an agent by writing its manifest.

Design
------
Upstream's ``oabctl scale`` calls ``ecs:UpdateService(desiredCount)`` directly. Under a controller
that would last until the next reconcile or resync, which puts the count back to what the
manifest says. So ``scale`` writes the manifest instead, never ECS: ``0`` sets ``spec.suspend:
true``, ``1`` removes it. That is a new generation (the store bumps it when the spec changes),
written compare-and-swap against one read (``If-Match`` its ETag, re-read and retried on a lost
race, exit 4 after repeated conflicts), with a change record so the controller reconciles at
once. The reconciler then sets the desired count (:mod:`oab.controller.core.schedule`): 0 and
phase ``Suspended`` with ``suspend``; with it cleared, whatever ``spec.schedules`` say now (1
when there are none).

Exit codes: 0 done (also when already at that size), 1 a size other than 0 or 1, an unknown
agent or one owned by a fleet (edit the fleet), 3 AWS, 4 concurrent modifications.
Time model: the injected wall clock only tells, for ``1``, what the schedules say now.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from oab.controller.adapters.store import (
    Desired,
    DesiredStateStore,
    OwnershipError,
    StoredObject,
    object_key,
)
from oab.controller.api.service import OABServiceSpec
from oab.controller.base.errors import OabError
from oab.controller.base.names import SERVICE_RESOURCE
from oab.controller.cli.common import KIND, add_namespace, compare_and_swap, require_agent
from oab.controller.cli.context import Context
from oab.controller.cli.registry import EXIT_OK, Command, command
from oab.controller.core.schedule import Plan
from oab.controller.core.status import iso

__all__ = ["InvalidSize", "schedule_view"]


class InvalidSize(OabError):
    """A size other than 0 or 1 (exit 1)."""

    reason = "InvalidSize"


def schedule_view(spec: Mapping[str, Any], now: float) -> dict[str, Any] | None:
    """What ``describe`` and ``get -o wide`` show of a stored spec's suspend and schedules at
    ``now`` (``None`` when it has neither; the stored spec was validated when applied)."""
    if not spec.get("suspend") and not spec.get("schedules"):
        return None
    plan = Plan.of(OABServiceSpec.model_validate(spec))
    level = plan.level(now)
    upcoming = plan.next_transition(now)
    return {
        "suspend": plan.suspend,
        "schedules": [f"{e.describe()} -> {e.replicas}" for e in plan.entries],
        "desiredReplicas": level.replicas,
        "because": level.describe(),
        "nextTransition": upcoming.describe() if upcoming else None,
        "nextAt": iso(upcoming.at) if upcoming else None,
        "nextReplicas": upcoming.replicas if upcoming else None,
    }


def _suspended(obj: StoredObject, *, suspend: bool) -> Desired:
    spec = dict(obj.spec)
    if suspend:
        spec["suspend"] = True
    else:
        spec.pop("suspend", None)  # absent means false: the manifest reads as it was applied
    return Desired(
        kind=KIND,
        namespace=obj.namespace,
        name=obj.name,
        spec=spec,
        labels=obj.labels,
        annotations=obj.annotations,
    )


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="agent name")
    p.add_argument("size", metavar="SIZE", help="0 (suspend) or 1 (resume)")
    add_namespace(p)


@command(
    "scale",
    help="suspend (0) or resume (1) an agent: writes spec.suspend, never ECS",
    configure=_configure,
)
def _scale(ctx: Context) -> int:
    namespace, name, size = ctx.args.namespace, ctx.args.name, ctx.args.size
    if size not in ("0", "1"):
        raise InvalidSize(
            f"invalid size {size[:20]!r}: an agent runs 0 (suspended) or 1 task "
            "(one bot token holds one connection); write `oabctl scale NAME 0` or `... 1`"
        )
    suspend = size == "0"
    key = object_key(KIND, namespace, name)

    def change(store: DesiredStateStore) -> Any:
        obj = require_agent(store, namespace, name)
        if obj.owner is not None:
            raise OwnershipError(key, owner=obj.owner, writer=None)
        if obj.deleted:
            raise InvalidSize(f"{namespace}/{name} is being deleted; nothing to scale")
        return obj, store.apply(_suspended(obj, suspend=suspend))

    obj, result = compare_and_swap(ctx, key, change)
    note = " (unchanged)" if result.outcome == "unchanged" else f" (generation {result.generation})"
    ctx.print(f"{SERVICE_RESOURCE}/{name} scaled to {size}{note}")
    if not suspend:
        spec = OABServiceSpec.model_validate({k: v for k, v in obj.spec.items() if k != "suspend"})
        level = Plan.of(spec).level(ctx.wall_clock())
        if level.replicas == 0:
            ctx.stderr.write(f"note: spec.schedules keep it at 0 for now: {level.describe()}\n")
    return EXIT_OK


#: This group's commands (listed in :data:`oab.controller.cli.main.GROUPS`).
COMMANDS: tuple[Command, ...] = (_scale,)
