"""Thin ECS adapter: every ECS call the controller makes, rate limited and recorded.

Design
------
- One object per replica wraps the boto3 ECS client built in the composition root. It holds no
  desired state: reconcile decides, this module calls.
- Every call first takes a token from the per-family
  :class:`~oab.controller.adapters.ratelimit.RateLimiter` (``ecs.read``, ``ecs.mutate``,
  ``ecs.register``); botocore's standard retry mode is the only retry layer below it.
- Every *mutating* call is appended to the run's :class:`CallLog` (action, target, resulting ARN,
  AWS request id) before the result is returned, so the audit row names every side effect.
- A callable ``guard`` is checked before each mutating call: the worker passes its claim's local
  validity, so a worker whose claim may have expired stops making ECS side effects at once.
- botocore exceptions are classified into :class:`~oab.controller.base.errors.AwsError` (retryable
  or not, throttled or not, with code and request id) and raised ``from`` the original.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.base.errors import AwsError, ClaimInDoubt, classify_aws
from oab.controller.core.status import AwsCall

DESCRIBE_BATCH = 10  # DescribeServices takes at most 10 services per call.


@dataclass
class CallLog:
    """The mutating AWS calls of one run, in order (thread-safe append)."""

    calls: list[AwsCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, call: AwsCall) -> None:
        """Record one call."""
        with self._lock:
            self.calls.append(call)

    def snapshot(self) -> tuple[AwsCall, ...]:
        """The calls so far."""
        with self._lock:
            return tuple(self.calls)


def _request_id(resp: dict[str, Any]) -> str:
    return str(resp.get("ResponseMetadata", {}).get("RequestId", ""))


class EcsAdapter:
    """The ECS calls of the controller, for one cluster."""

    def __init__(self, client: Any, *, cluster: str, limiter: RateLimiter) -> None:
        self._client = client
        self._cluster = cluster
        self._limiter = limiter

    @property
    def cluster(self) -> str:
        """The cluster every call targets."""
        return self._cluster

    @contextmanager
    def _call(self, family: str, operation: str) -> Iterator[None]:
        self._limiter.acquire(family)
        try:
            yield
        except AwsError:
            raise
        except Exception as exc:
            raise classify_aws(exc, operation=operation) from exc

    @staticmethod
    def _check(guard: Callable[[], bool] | None, action: str) -> None:
        if guard is not None and not guard():
            raise ClaimInDoubt(f"claim no longer valid locally; refusing {action}")

    # ----------------------------------------------------------------- reads
    def describe_services(self, names: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Services by name (``None`` when missing or INACTIVE), in batches of 10."""
        out: dict[str, dict[str, Any] | None] = dict.fromkeys(names)
        for i in range(0, len(names), DESCRIBE_BATCH):
            batch = list(names[i : i + DESCRIBE_BATCH])
            with self._call("ecs.read", "DescribeServices"):
                resp = self._client.describe_services(
                    cluster=self._cluster, services=batch, include=["TAGS"]
                )
            for svc in resp.get("services", []):
                if svc.get("status") != "INACTIVE":
                    out[svc["serviceName"]] = svc
        return out

    def describe_service(self, name: str) -> dict[str, Any] | None:
        """One service, or ``None`` when missing or INACTIVE."""
        return self.describe_services([name])[name]

    def latest_task_definition(self, family: str) -> tuple[str, dict[str, str]] | None:
        """ARN and tags of the newest ACTIVE revision of ``family``, if any."""
        with self._call("ecs.read", "DescribeTaskDefinition"):
            try:
                resp = self._client.describe_task_definition(
                    taskDefinition=family, include=["TAGS"]
                )
            except Exception as exc:
                err = classify_aws(exc, operation="DescribeTaskDefinition")
                if err.code in ("ClientException", "InvalidParameterException"):
                    return None  # no revision registered yet
                raise err from exc
        td = resp["taskDefinition"]
        if td.get("status") != "ACTIVE":
            return None
        tags = {t["key"]: t["value"] for t in resp.get("tags", [])}
        return str(td["taskDefinitionArn"]), tags

    def list_task_definitions(self, family: str) -> list[str]:
        """Every ACTIVE revision ARN of ``family``."""
        arns: list[str] = []
        kwargs: dict[str, Any] = {"familyPrefix": family, "status": "ACTIVE"}
        while True:
            with self._call("ecs.read", "ListTaskDefinitions"):
                resp = self._client.list_task_definitions(**kwargs)
            # familyPrefix matches prefixes: keep this family's revisions only.
            arns += [a for a in resp.get("taskDefinitionArns", []) if _family_of(a) == family]
            if not resp.get("nextToken"):
                return arns
            kwargs["nextToken"] = resp["nextToken"]

    def running_task_arns(self, service: str) -> list[str]:
        """ARNs of the service's RUNNING tasks (one ListTasks call for one task)."""
        arns: list[str] = []
        kwargs: dict[str, Any] = {
            "cluster": self._cluster,
            "serviceName": service,
            "desiredStatus": "RUNNING",
        }
        while True:
            with self._call("ecs.read", "ListTasks"):
                resp = self._client.list_tasks(**kwargs)
            arns += resp.get("taskArns", [])
            if not resp.get("nextToken"):
                return arns
            kwargs["nextToken"] = resp["nextToken"]

    def service_tasks(self, service: str) -> list[dict[str, Any]]:
        """Tasks of ``service`` (running and recently stopped), described."""
        arns: list[str] = []
        for status in ("RUNNING", "STOPPED"):
            with self._call("ecs.read", "ListTasks"):
                resp = self._client.list_tasks(
                    cluster=self._cluster, serviceName=service, desiredStatus=status
                )
            arns += resp.get("taskArns", [])
        if not arns:
            return []
        tasks: list[dict[str, Any]] = []
        for i in range(0, len(arns), 100):
            with self._call("ecs.read", "DescribeTasks"):
                resp = self._client.describe_tasks(cluster=self._cluster, tasks=arns[i : i + 100])
            tasks += resp.get("tasks", [])
        return tasks

    # -------------------------------------------------------------- mutations
    def register_task_definition(
        self, request: dict[str, Any], *, log: CallLog, guard: Callable[[], bool] | None = None
    ) -> str:
        """Register a revision; returns its ARN."""
        self._check(guard, "RegisterTaskDefinition")
        with self._call("ecs.register", "RegisterTaskDefinition"):
            resp = self._client.register_task_definition(**request)
        arn = str(resp["taskDefinition"]["taskDefinitionArn"])
        log.add(
            AwsCall(
                action="ecs:RegisterTaskDefinition",
                target=str(request["family"]),
                result=arn,
                request_id=_request_id(resp),
            )
        )
        return arn

    def create_service(
        self, request: dict[str, Any], *, log: CallLog, guard: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        """Create a service (idempotent through the request's ``clientToken``)."""
        self._check(guard, "CreateService")
        with self._call("ecs.mutate", "CreateService"):
            resp = self._client.create_service(**request)
        svc: dict[str, Any] = resp["service"]
        log.add(
            AwsCall(
                action="ecs:CreateService",
                target=str(request["serviceName"]),
                result=str(svc.get("serviceArn", "")),
                request_id=_request_id(resp),
            )
        )
        return svc

    def update_service(
        self, request: dict[str, Any], *, log: CallLog, guard: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        """Update a service (callers compare first: UpdateService takes no idempotency token)."""
        self._check(guard, "UpdateService")
        with self._call("ecs.mutate", "UpdateService"):
            resp = self._client.update_service(**request)
        svc: dict[str, Any] = resp["service"]
        log.add(
            AwsCall(
                action="ecs:UpdateService",
                target=str(request["service"]),
                result=str(svc.get("serviceArn", "")),
                request_id=_request_id(resp),
            )
        )
        return svc

    def delete_service(
        self, name: str, *, log: CallLog, guard: Callable[[], bool] | None = None
    ) -> None:
        """Delete a service (``force`` so a scaled-down service goes at once)."""
        self._check(guard, "DeleteService")
        with self._call("ecs.mutate", "DeleteService"):
            resp = self._client.delete_service(cluster=self._cluster, service=name, force=True)
        log.add(
            AwsCall(
                action="ecs:DeleteService",
                target=name,
                result=str(resp.get("service", {}).get("serviceArn", "")),
                request_id=_request_id(resp),
            )
        )

    def deregister_task_definition(
        self, arn: str, *, log: CallLog, guard: Callable[[], bool] | None = None
    ) -> None:
        """Deregister one revision."""
        self._check(guard, "DeregisterTaskDefinition")
        with self._call("ecs.register", "DeregisterTaskDefinition"):
            resp = self._client.deregister_task_definition(taskDefinition=arn)
        log.add(
            AwsCall(
                action="ecs:DeregisterTaskDefinition",
                target=arn,
                result=arn,
                request_id=_request_id(resp),
            )
        )


def _family_of(arn: str) -> str:
    """``arn:...:task-definition/family:rev`` -> ``family``."""
    return arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]
