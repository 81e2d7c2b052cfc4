"""Adapters between the simulated ECS data plane and moto's ECS and EC2 backend objects.

Design: the simulator (:mod:`oab.controller.local.dataplane`) reasons about deployments and tasks;
everything that knows moto's object model (where the backends live, how a ``Task`` and its
``Container`` are built, how an awsvpc task gets an ENI) is here, so a moto upgrade that moves
those internals touches this module only. moto is imported inside the functions: the module is
imported by the emulator process only, after moto is loaded.

Invariants: the functions run under the emulator's global request lock (the simulator's callers
hold it) and never create accounts as a side effect of reading (``dict.values`` on moto's
``BackendDict``). No clock: timestamps are set by the simulator.

This module is local/testing tooling: product code never imports it.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TaskDefinitionView",
    "attach_eni",
    "ecs_backends",
    "new_container",
    "release_enis",
    "resolve_task_definition",
    "secret_refs",
    "sim_task_class",
]

# The simulator's logger: these messages are part of its story.
log = logging.getLogger("oab.controller.local.dataplane")


def ecs_backends() -> Iterator[Any]:
    """Every ECS backend (account x region) moto has created so far."""
    from moto.ecs.models import ecs_backends

    # dict.values avoids BackendDict.__getitem__, which would create accounts as a side effect.
    for account in list(dict.values(ecs_backends)):
        yield from list(dict.values(account))


def resolve_task_definition(backend: Any, ref: str) -> str:
    """The full ARN for ``family``, ``family:rev`` or an ARN (moto stores what it was given)."""
    try:
        return str(backend.describe_task_definition(ref).arn)
    except Exception:
        return ref


def secret_refs(backend: Any, task_definition_arn: str) -> Iterable[str]:
    """Every ``valueFrom`` (and registry credential) the task definition's containers name."""
    try:
        td = backend.describe_task_definition(task_definition_arn)
    except Exception:
        return
    for spec in td.container_definitions:
        for secret in spec.get("secrets") or []:
            if secret.get("valueFrom"):
                yield str(secret["valueFrom"])
        creds = (spec.get("repositoryCredentials") or {}).get("credentialsParameter")
        if creds:
            yield str(creds)


def new_container(td: Any, task: Any, spec: dict[str, Any]) -> Any:
    """A moto ``Container`` for ``spec``, PENDING, that echoes no configuration."""
    from moto.ecs.models import Container

    c: Any = Container(td)  # type: ignore[abstract]  # moto instantiates it the same way
    c.task_arn = task.task_arn
    c.name = spec.get("name")
    c.image = spec.get("image")
    c.cpu = spec.get("cpu", 0)
    c.memory = spec.get("memory")
    c.essential = bool(spec.get("essential", True))
    c.last_status = "PENDING"
    c.exitCode = None
    c.reason = None
    c.health_status = "UNKNOWN"
    c.environment = None  # never echo configuration (it could carry values) in DescribeTasks
    c.command = None
    return c


@dataclass(frozen=True)
class TaskDefinitionView:
    """The part of a task definition moto's ``Task`` reads when it is built."""

    arn: str
    container_definitions: list[dict[str, Any]]
    network_mode: str = "none"


def attach_eni(backend: Any, task: Any, network: dict[str, Any]) -> None:
    """Give an awsvpc task an ENI in moto's EC2 and the attachment ECS shows for it."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.utils import random_private_ip

    vpc_conf = network.get("awsvpcConfiguration") or {}
    subnets = vpc_conf.get("subnets") or []
    if not subnets:
        return  # ECS would have refused the service; nothing sensible to attach
    task.network_configuration = network
    eni = ec2_backends[backend.account_id][task.region_name].create_network_interface(
        subnet=subnets[0],
        private_ip_address=random_private_ip(),
        group_ids=vpc_conf.get("securityGroups") or [],
        description="moto ECS (simulated data plane)",
    )
    eni.status = "in-use"
    details = [
        ("subnetId", subnets[0]),
        ("networkInterfaceId", eni.id),
        ("macAddress", getattr(eni, "mac_address", None)),
        ("privateDnsName", getattr(eni, "private_dns_name", None)),
        ("privateIPv4Address", getattr(eni, "private_ip_address", None)),
    ]
    task.attachments.append(
        {
            "id": str(uuid.uuid4()),
            "type": "ElasticNetworkInterface",
            "status": "ATTACHED",
            "details": [{"name": k, "value": v} for k, v in details if v is not None],
        }
    )


def release_enis(backend: Any, task: Any) -> None:
    """Mark the task's ENI attachments deleted and delete the ENIs from moto's EC2."""
    # Each awsvpc task created an ENI in moto's EC2; free it so long runs do not accumulate them.
    from moto.ec2.models import ec2_backends

    for attachment in getattr(task, "attachments", None) or []:
        if attachment.get("status") != "ATTACHED":
            continue
        attachment["status"] = "DELETED"
        for detail in attachment.get("details", []):
            if detail.get("name") == "networkInterfaceId":
                try:
                    ec2_backends[backend.account_id][task.region_name].delete_network_interface(
                        detail["value"]
                    )
                except Exception:
                    log.debug("ENI %s already gone", detail["value"])


@functools.cache
def sim_task_class() -> type:
    """moto's ``Task`` with a status only the simulator moves (built once, lazily)."""
    from moto.ecs.models import Task

    class SimTask(Task):
        """A moto Task whose status only the simulator moves (not moto's state manager)."""

        def advance(self) -> None:
            """DescribeTasks calls this to age moto's own tasks; ours age by steps."""

        @property
        def status(self) -> str | None:
            return self._status

        @status.setter
        def status(self, value: str) -> None:
            self._status = value

    return SimTask
