"""Thin ingress adapter: the API Gateway v2, Cloud Map and EC2 calls of webhook ingress.

Design
    :class:`IngressApi` is the small storage-like interface the ingress reconciler
    (:mod:`oab.controller.reconcile.ingress`) drives; :class:`AwsIngress` implements it with
    boto3 clients built in the composition root, :class:`MemoryIngress` is its in-memory twin
    for unit tests. The twin behaves as AWS does where the local emulator (moto 5.2.5) does not
    (measured; README "Local AWS and the simulated data plane"):

    - a new VPC Link is ``PENDING`` until :meth:`MemoryIngress.settle` (moto: ``AVAILABLE`` at
      once);
    - a second Cloud Map service of the same name in a namespace is refused
      (``ServiceAlreadyExists``; moto creates a duplicate), as are a duplicate route key or stage
      (``ConflictException``; moto accepts them);
    - deleting a Cloud Map service that still has instances is refused (``ResourceInUse``; moto
      deletes it), and deleting what is gone is ``NotFound`` (moto answers OK).

Invariants
    - Every *mutating* call checks the ``guard`` first (the worker's claim), takes an
      ``ingress`` rate-limit token and is appended to the run's :class:`CallLog` with the exact
      id it produced, before the id is returned.
    - Look-ups are exact: by recorded id when there is one, else by exact name (paginated); the
      HTTP API must also carry the agent's ``oab.dev/namespace``/``oab.dev/name`` tags, and two
      same-named candidates are an error, never a first-match pick (as upstream).
    - botocore errors become :class:`~oab.controller.base.errors.AwsError` (``raise ... from``).

Time model
    None here: no call waits. A VPC Link that is not ``AVAILABLE`` yet is the reconciler's
    requeue, not a sleep.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from botocore.exceptions import ClientError

from oab.controller.adapters.ecs import CallLog
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.api.service import SecretRef, SsmSecret
from oab.controller.base.errors import AwsError, ClaimInDoubt, TerminalError, classify_aws
from oab.controller.base.names import MANAGED_BY, MANAGED_BY_TAG, NAME_TAG, NAMESPACE_TAG
from oab.controller.core.ingress import PATH_MAPPING, STAGE, Found
from oab.controller.core.status import AwsCall

__all__ = ["AwsIngress", "AwsSecretValues", "IngressApi", "MemoryIngress", "owner_tags"]

Guard = Callable[[], bool] | None

#: Error codes that mean "already gone" for a delete.
_GONE = frozenset({"NotFoundException", "ServiceNotFound", "NamespaceNotFound"})


def owner_tags(namespace: str, name: str) -> dict[str, str]:
    """Tags that make a same-named HTTP API provably this agent's."""
    return {NAMESPACE_TAG: namespace, NAME_TAG: name, MANAGED_BY_TAG: MANAGED_BY}


class IngressApi(Protocol):
    """The ingress calls (see the module doc); every mutating one takes ``log`` and ``guard``."""

    def vpc_of(self, subnet: str) -> str:
        """The VPC of a subnet."""

    def find_namespace(self, *, name: str, recorded: str) -> Found | None:
        """The private DNS namespace ``name`` (``recorded`` id first)."""

    def create_namespace(self, *, name: str, vpc_id: str, log: CallLog, guard: Guard) -> str:
        """Start creating a namespace; returns the operation id (it appears when done)."""

    def find_registry(self, *, namespace_id: str, name: str, recorded: str) -> Found | None:
        """The Cloud Map service ``name`` in a namespace."""

    def create_registry(self, *, namespace_id: str, name: str, log: CallLog, guard: Guard) -> Found:
        """Create an SRV service."""

    def ruled_groups(self, *, groups: Sequence[str], port: int) -> frozenset[str]:
        """The groups that already let themselves in on tcp ``port``."""

    def authorize_rule(self, *, group: str, port: int, log: CallLog, guard: Guard) -> None:
        """Add the self-referencing rule (a duplicate counts as success)."""

    def find_vpc_link(self, *, name: str, recorded: str) -> Found | None:
        """The VPC Link ``name`` (FAILED/DELETING ones ignored)."""

    def create_vpc_link(
        self,
        *,
        name: str,
        subnets: Sequence[str],
        groups: Sequence[str],
        log: CallLog,
        guard: Guard,
    ) -> Found:
        """Create a VPC Link (it starts PENDING on AWS)."""

    def find_api(self, *, name: str, tags: Mapping[str, str], recorded: str) -> Found | None:
        """The agent's HTTP API."""

    def create_api(
        self, *, name: str, tags: Mapping[str, str], log: CallLog, guard: Guard
    ) -> Found:
        """Create an HTTP API."""

    def find_integration(self, *, api_id: str, uri: str, link_id: str) -> Found | None:
        """The API's integration with this URI over this link."""

    def create_integration(
        self, *, api_id: str, uri: str, link_id: str, log: CallLog, guard: Guard
    ) -> Found:
        """Create the HTTP_PROXY integration (path passed through unchanged)."""

    def update_integration(
        self, *, api_id: str, integration_id: str, log: CallLog, guard: Guard
    ) -> None:
        """Restore the path mapping of an integration."""

    def routes(self, *, api_id: str) -> dict[str, tuple[str, str]]:
        """Route key -> (route id, target) of an API."""

    def create_route(
        self, *, api_id: str, key: str, integration_id: str, log: CallLog, guard: Guard
    ) -> str:
        """Create a route; returns its id."""

    def delete_route(self, *, api_id: str, route_id: str, log: CallLog, guard: Guard) -> None:
        """Delete a route (gone counts as success)."""

    def has_stage(self, *, api_id: str) -> bool:
        """Whether the ``$default`` stage exists."""

    def create_stage(self, *, api_id: str, log: CallLog, guard: Guard) -> None:
        """Create the auto-deploy ``$default`` stage."""

    def delete_api(self, *, api_id: str, log: CallLog, guard: Guard) -> None:
        """Delete an HTTP API with everything in it (gone counts as success)."""

    def delete_registry(self, *, registry_id: str, log: CallLog, guard: Guard) -> None:
        """Delete a Cloud Map service (gone counts as success; in use is retryable)."""


def _check(guard: Guard, action: str) -> None:
    if guard is not None and not guard():
        raise ClaimInDoubt(f"claim no longer valid locally; refusing {action}")


def _rid(resp: Mapping[str, Any]) -> str:
    return str(resp.get("ResponseMetadata", {}).get("RequestId", ""))


def _found_link(item: Mapping[str, Any]) -> Found:
    return Found(
        id=str(item["VpcLinkId"]),
        status=str(item.get("VpcLinkStatus", "")),
        security_groups=tuple(sorted(item.get("SecurityGroupIds", []))),
    )


def _found_integration(item: Mapping[str, Any]) -> Found:
    return Found(
        id=str(item["IntegrationId"]),
        uri=str(item.get("IntegrationUri", "")),
        connection_id=str(item.get("ConnectionId", "")),
        parameters=dict(item.get("RequestParameters") or {}),
    )


class AwsIngress:
    """:class:`IngressApi` over boto3 ``apigatewayv2``, ``servicediscovery`` and ``ec2``."""

    def __init__(
        self, *, apigateway: Any, servicediscovery: Any, ec2: Any, limiter: RateLimiter
    ) -> None:
        self._gw = apigateway
        self._sd = servicediscovery
        self._ec2 = ec2
        self._limiter = limiter

    @contextmanager
    def _call(self, operation: str, *, gone_ok: bool = False) -> Iterator[None]:
        self._limiter.acquire("ingress")
        try:
            yield
        except AwsError:
            raise
        except ClientError as exc:
            err = classify_aws(exc, operation=operation)
            if gone_ok and err.code in _GONE:
                return
            if err.code == "ResourceInUse":
                err.retryable = True  # instances still deregistering: try again later
            raise err from exc
        except Exception as exc:
            raise classify_aws(exc, operation=operation) from exc

    def _pages(self, client: Any, operation: str, key: str, **kw: Any) -> Iterator[dict[str, Any]]:
        if client.can_paginate(operation):
            with self._call(operation):
                for page in client.get_paginator(operation).paginate(**kw):
                    yield from page.get(key, [])
            return
        token = ""
        while True:
            with self._call(operation):
                resp = getattr(client, operation)(**kw, **({"NextToken": token} if token else {}))
            yield from resp.get(key, [])
            token = str(resp.get("NextToken", ""))
            if not token:
                return

    # ------------------------------------------------------------------ EC2
    def vpc_of(self, subnet: str) -> str:
        with self._call("DescribeSubnets"):
            resp = self._ec2.describe_subnets(SubnetIds=[subnet])
        return str(resp["Subnets"][0]["VpcId"])

    def ruled_groups(self, *, groups: Sequence[str], port: int) -> frozenset[str]:
        if not groups:
            return frozenset()
        found: set[str] = set()
        with self._call("DescribeSecurityGroups"):
            resp = self._ec2.describe_security_groups(GroupIds=list(groups))
        for group in resp.get("SecurityGroups", []):
            gid = str(group["GroupId"])
            for perm in group.get("IpPermissions", []):
                if (
                    perm.get("IpProtocol") == "tcp"
                    and perm.get("FromPort") == port
                    and perm.get("ToPort") == port
                    and any(p.get("GroupId") == gid for p in perm.get("UserIdGroupPairs", []))
                ):
                    found.add(gid)
        return frozenset(found)

    def authorize_rule(self, *, group: str, port: int, log: CallLog, guard: Guard) -> None:
        _check(guard, "AuthorizeSecurityGroupIngress")
        perm = {
            "IpProtocol": "tcp",
            "FromPort": port,
            "ToPort": port,
            "UserIdGroupPairs": [{"GroupId": group}],
        }
        self._limiter.acquire("ingress")
        try:
            resp = self._ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[perm])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidPermission.Duplicate":
                return  # another agent sharing the group added it: shared, nothing to record
            raise classify_aws(exc, operation="AuthorizeSecurityGroupIngress") from exc
        except Exception as exc:
            raise classify_aws(exc, operation="AuthorizeSecurityGroupIngress") from exc
        rules = ",".join(
            str(r.get("SecurityGroupRuleId")) for r in resp.get("SecurityGroupRules", [])
        )
        log.add(
            AwsCall(
                action="ec2:AuthorizeSecurityGroupIngress",
                target=f"{group} tcp/{port}",
                result=rules,
                request_id=_rid(resp),
            )
        )

    # ------------------------------------------------------------- Cloud Map
    def find_namespace(self, *, name: str, recorded: str) -> Found | None:
        if recorded:
            with self._call("GetNamespace", gone_ok=True):
                ns = self._sd.get_namespace(Id=recorded)["Namespace"]
                if ns.get("Name") == name:
                    return Found(id=str(ns["Id"]), arn=str(ns.get("Arn", "")))
        matches = [
            ns
            for ns in self._pages(self._sd, "list_namespaces", "Namespaces")
            if ns.get("Name") == name and ns.get("Type") == "DNS_PRIVATE"
        ]
        if len(matches) > 1:
            raise TerminalError(
                f"{len(matches)} Cloud Map namespaces are named {name}; delete the extra ones",
                reason="DuplicateIngressResource",
            )
        return (
            Found(id=str(matches[0]["Id"]), arn=str(matches[0].get("Arn", ""))) if matches else None
        )

    def create_namespace(self, *, name: str, vpc_id: str, log: CallLog, guard: Guard) -> str:
        _check(guard, "CreatePrivateDnsNamespace")
        with self._call("CreatePrivateDnsNamespace"):
            # The creator request id makes a retried create (same name) the same operation.
            resp = self._sd.create_private_dns_namespace(
                Name=name, Vpc=vpc_id, CreatorRequestId=f"oab-{name}"[:64]
            )
        op = str(resp.get("OperationId", ""))
        log.add(
            AwsCall(
                action="servicediscovery:CreatePrivateDnsNamespace",
                target=name,
                result=op,
                request_id=_rid(resp),
            )
        )
        return op

    def find_registry(self, *, namespace_id: str, name: str, recorded: str) -> Found | None:
        if recorded:
            with self._call("GetService", gone_ok=True):
                svc = self._sd.get_service(Id=recorded)["Service"]
                if svc.get("Name") == name and svc.get("NamespaceId") == namespace_id:
                    return Found(id=str(svc["Id"]), arn=str(svc["Arn"]))
        matches = [
            s
            for s in self._pages(
                self._sd,
                "list_services",
                "Services",
                Filters=[{"Name": "NAMESPACE_ID", "Values": [namespace_id], "Condition": "EQ"}],
            )
            if s.get("Name") == name
        ]
        if len(matches) > 1:
            raise TerminalError(
                f"{len(matches)} Cloud Map services are named {name} in {namespace_id}; "
                "delete the extra ones",
                reason="DuplicateIngressResource",
            )
        return Found(id=str(matches[0]["Id"]), arn=str(matches[0]["Arn"])) if matches else None

    def create_registry(self, *, namespace_id: str, name: str, log: CallLog, guard: Guard) -> Found:
        _check(guard, "servicediscovery:CreateService")
        with self._call("servicediscovery:CreateService"):
            resp = self._sd.create_service(
                Name=name,
                NamespaceId=namespace_id,
                DnsConfig={"DnsRecords": [{"Type": "SRV", "TTL": 60}]},
            )
        svc = resp["Service"]
        found = Found(id=str(svc["Id"]), arn=str(svc["Arn"]))
        log.add(
            AwsCall(
                action="servicediscovery:CreateService",
                target=name,
                result=found.arn,
                request_id=_rid(resp),
            )
        )
        return found

    def delete_registry(self, *, registry_id: str, log: CallLog, guard: Guard) -> None:
        _check(guard, "servicediscovery:DeleteService")
        resp: Mapping[str, Any] = {}
        with self._call("servicediscovery:DeleteService", gone_ok=True):
            resp = self._sd.delete_service(Id=registry_id)
        log.add(
            AwsCall(
                action="servicediscovery:DeleteService",
                target=registry_id,
                result=registry_id,
                request_id=_rid(resp),
            )
        )

    # ---------------------------------------------------------- API Gateway
    def find_vpc_link(self, *, name: str, recorded: str) -> Found | None:
        if recorded:
            with self._call("GetVpcLink", gone_ok=True):
                item = self._gw.get_vpc_link(VpcLinkId=recorded)
                if item.get("Name") == name and item.get("VpcLinkStatus") not in (
                    "FAILED",
                    "DELETING",
                ):
                    return _found_link(item)
        links = [
            _found_link(i)
            for i in self._pages(self._gw, "get_vpc_links", "Items")
            if i.get("Name") == name and i.get("VpcLinkStatus") not in ("FAILED", "DELETING")
        ]
        # Upstream's ranking: AVAILABLE first, then the smallest id (deterministic for all).
        links.sort(key=lambda f: (f.status != "AVAILABLE", f.id))
        return links[0] if links else None

    def create_vpc_link(
        self,
        *,
        name: str,
        subnets: Sequence[str],
        groups: Sequence[str],
        log: CallLog,
        guard: Guard,
    ) -> Found:
        _check(guard, "CreateVpcLink")
        with self._call("CreateVpcLink"):
            resp = self._gw.create_vpc_link(
                Name=name,
                SubnetIds=list(subnets),
                SecurityGroupIds=list(groups),
                Tags={MANAGED_BY_TAG: MANAGED_BY},
            )
        found = _found_link(resp)
        log.add(
            AwsCall(
                action="apigateway:CreateVpcLink",
                target=name,
                result=found.id,
                request_id=_rid(resp),
            )
        )
        return found

    def find_api(self, *, name: str, tags: Mapping[str, str], recorded: str) -> Found | None:
        if recorded:
            with self._call("GetApi", gone_ok=True):
                item = self._gw.get_api(ApiId=recorded)
                if item.get("Name") == name:
                    return Found(id=str(item["ApiId"]), endpoint=str(item.get("ApiEndpoint", "")))
        matches = [
            i
            for i in self._pages(self._gw, "get_apis", "Items")
            if i.get("Name") == name and i.get("ProtocolType") == "HTTP"
        ]
        ours = [
            i for i in matches if all((i.get("Tags") or {}).get(k) == v for k, v in tags.items())
        ]
        if len(ours) > 1:
            raise TerminalError(
                f"{len(ours)} HTTP APIs named {name} carry this agent's tags; refusing a "
                "first-match pick: delete the extra ones",
                reason="DuplicateIngressResource",
            )
        if not ours and matches:
            raise TerminalError(
                f"an HTTP API named {name} exists without this agent's oab.dev tags: it is not "
                "ours to take over; delete or rename it",
                reason="NameCollision",
            )
        if not ours:
            return None
        return Found(id=str(ours[0]["ApiId"]), endpoint=str(ours[0].get("ApiEndpoint", "")))

    def create_api(
        self, *, name: str, tags: Mapping[str, str], log: CallLog, guard: Guard
    ) -> Found:
        _check(guard, "CreateApi")
        with self._call("CreateApi"):
            resp = self._gw.create_api(Name=name, ProtocolType="HTTP", Tags=dict(tags))
        found = Found(id=str(resp["ApiId"]), endpoint=str(resp.get("ApiEndpoint", "")))
        log.add(
            AwsCall(
                action="apigateway:CreateApi", target=name, result=found.id, request_id=_rid(resp)
            )
        )
        return found

    def delete_api(self, *, api_id: str, log: CallLog, guard: Guard) -> None:
        _check(guard, "DeleteApi")
        resp: Mapping[str, Any] = {}
        with self._call("DeleteApi", gone_ok=True):
            resp = self._gw.delete_api(ApiId=api_id)
        log.add(
            AwsCall(
                action="apigateway:DeleteApi", target=api_id, result=api_id, request_id=_rid(resp)
            )
        )

    def find_integration(self, *, api_id: str, uri: str, link_id: str) -> Found | None:
        for item in self._pages(self._gw, "get_integrations", "Items", ApiId=api_id):
            if item.get("IntegrationUri") == uri and item.get("ConnectionId") == link_id:
                return _found_integration(item)
        return None

    def create_integration(
        self, *, api_id: str, uri: str, link_id: str, log: CallLog, guard: Guard
    ) -> Found:
        _check(guard, "CreateIntegration")
        with self._call("CreateIntegration"):
            resp = self._gw.create_integration(
                ApiId=api_id,
                IntegrationType="HTTP_PROXY",
                IntegrationMethod="ANY",
                IntegrationUri=uri,
                ConnectionType="VPC_LINK",
                ConnectionId=link_id,
                PayloadFormatVersion="1.0",
                RequestParameters=dict(PATH_MAPPING),
            )
        found = _found_integration(resp)
        log.add(
            AwsCall(
                action="apigateway:CreateIntegration",
                target=api_id,
                result=found.id,
                request_id=_rid(resp),
            )
        )
        return found

    def update_integration(
        self, *, api_id: str, integration_id: str, log: CallLog, guard: Guard
    ) -> None:
        _check(guard, "UpdateIntegration")
        with self._call("UpdateIntegration"):
            resp = self._gw.update_integration(
                ApiId=api_id, IntegrationId=integration_id, RequestParameters=dict(PATH_MAPPING)
            )
        log.add(
            AwsCall(
                action="apigateway:UpdateIntegration",
                target=f"{api_id}/{integration_id}",
                result=integration_id,
                request_id=_rid(resp),
            )
        )

    def routes(self, *, api_id: str) -> dict[str, tuple[str, str]]:
        return {
            str(i["RouteKey"]): (str(i["RouteId"]), str(i.get("Target", "")))
            for i in self._pages(self._gw, "get_routes", "Items", ApiId=api_id)
        }

    def create_route(
        self, *, api_id: str, key: str, integration_id: str, log: CallLog, guard: Guard
    ) -> str:
        _check(guard, "CreateRoute")
        with self._call("CreateRoute"):
            resp = self._gw.create_route(
                ApiId=api_id, RouteKey=key, Target=f"integrations/{integration_id}"
            )
        route_id = str(resp["RouteId"])
        log.add(
            AwsCall(
                action="apigateway:CreateRoute",
                target=f"{api_id} {key}",
                result=route_id,
                request_id=_rid(resp),
            )
        )
        return route_id

    def delete_route(self, *, api_id: str, route_id: str, log: CallLog, guard: Guard) -> None:
        _check(guard, "DeleteRoute")
        resp: Mapping[str, Any] = {}
        with self._call("DeleteRoute", gone_ok=True):
            resp = self._gw.delete_route(ApiId=api_id, RouteId=route_id)
        log.add(
            AwsCall(
                action="apigateway:DeleteRoute",
                target=f"{api_id}/{route_id}",
                result=route_id,
                request_id=_rid(resp),
            )
        )

    def has_stage(self, *, api_id: str) -> bool:
        return any(
            s.get("StageName") == STAGE
            for s in self._pages(self._gw, "get_stages", "Items", ApiId=api_id)
        )

    def create_stage(self, *, api_id: str, log: CallLog, guard: Guard) -> None:
        _check(guard, "CreateStage")
        with self._call("CreateStage"):
            resp = self._gw.create_stage(ApiId=api_id, StageName=STAGE, AutoDeploy=True)
        log.add(
            AwsCall(
                action="apigateway:CreateStage",
                target=f"{api_id}/{STAGE}",
                result=STAGE,
                request_id=_rid(resp),
            )
        )


# --------------------------------------------------------------------------- in-memory twin


def _conflict(code: str, message: str) -> AwsError:
    return AwsError(
        f"{code}: {message}",
        operation=code,
        code=code,
        status=400,
        request_id="",
        retryable=False,
        throttled=False,
    )


@dataclass
class _Api:
    name: str
    tags: dict[str, str]
    integrations: dict[str, Found] = field(default_factory=dict)
    routes: dict[str, tuple[str, str]] = field(default_factory=dict)
    stage: bool = False


class MemoryIngress:
    """In-memory :class:`IngressApi` with AWS's behaviour where moto differs (module doc).

    ``instances`` (Cloud Map service id -> registered instance count) is set by tests to model
    ECS registering tasks; ``calls`` counts every call by name.
    """

    def __init__(self, *, subnets: Mapping[str, str]) -> None:
        self._subnets = dict(subnets)
        self._ids = itertools.count(1)
        self.namespaces: dict[str, tuple[str, str]] = {}  # id -> (name, vpc)
        self.registries: dict[str, tuple[str, str]] = {}  # id -> (namespace id, name)
        self.instances: dict[str, int] = {}
        self.rules: set[tuple[str, int]] = set()
        self.links: dict[str, tuple[str, Found]] = {}  # id -> (name, link)
        self.apis: dict[str, _Api] = {}
        self.calls: dict[str, int] = {}

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def _count(
        self, name: str, log: CallLog | None = None, target: str = "", result: str = ""
    ) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if log is not None:
            log.add(AwsCall(action=name, target=target, result=result))

    def settle(self) -> None:
        """Every PENDING VPC Link becomes AVAILABLE (AWS takes minutes)."""
        for lid, (name, link) in self.links.items():
            self.links[lid] = (name, replace(link, status="AVAILABLE"))

    def vpc_of(self, subnet: str) -> str:
        self._count("DescribeSubnets")
        return self._subnets[subnet]

    def find_namespace(self, *, name: str, recorded: str) -> Found | None:
        self._count("ListNamespaces")
        return next((Found(id=i) for i, (n, _) in self.namespaces.items() if n == name), None)

    def create_namespace(self, *, name: str, vpc_id: str, log: CallLog, guard: Guard) -> str:
        _check(guard, "CreatePrivateDnsNamespace")
        if any(n == name for n, _ in self.namespaces.values()):
            raise _conflict("NamespaceAlreadyExists", name)
        nid = self._id("ns-")
        self.namespaces[nid] = (name, vpc_id)
        self._count("servicediscovery:CreatePrivateDnsNamespace", log, name, nid)
        return nid

    def find_registry(self, *, namespace_id: str, name: str, recorded: str) -> Found | None:
        self._count("ListServices")
        return next(
            (
                Found(id=i, arn=f"arn:srv/{i}")
                for i, (ns, n) in self.registries.items()
                if ns == namespace_id and n == name
            ),
            None,
        )

    def create_registry(self, *, namespace_id: str, name: str, log: CallLog, guard: Guard) -> Found:
        _check(guard, "servicediscovery:CreateService")
        if (namespace_id, name) in self.registries.values():
            raise _conflict("ServiceAlreadyExists", name)
        rid = self._id("srv-")
        self.registries[rid] = (namespace_id, name)
        self._count("servicediscovery:CreateService", log, name, f"arn:srv/{rid}")
        return Found(id=rid, arn=f"arn:srv/{rid}")

    def delete_registry(self, *, registry_id: str, log: CallLog, guard: Guard) -> None:
        _check(guard, "servicediscovery:DeleteService")
        if self.instances.get(registry_id, 0):
            err = _conflict("ResourceInUse", f"{registry_id} has registered instances")
            err.retryable = True
            raise err
        self.registries.pop(registry_id, None)
        self._count("servicediscovery:DeleteService", log, registry_id, registry_id)

    def ruled_groups(self, *, groups: Sequence[str], port: int) -> frozenset[str]:
        self._count("DescribeSecurityGroups")
        return frozenset(g for g in groups if (g, port) in self.rules)

    def authorize_rule(self, *, group: str, port: int, log: CallLog, guard: Guard) -> None:
        _check(guard, "AuthorizeSecurityGroupIngress")
        if (group, port) not in self.rules:
            self.rules.add((group, port))
            self._count("ec2:AuthorizeSecurityGroupIngress", log, f"{group} tcp/{port}")

    def find_vpc_link(self, *, name: str, recorded: str) -> Found | None:
        self._count("GetVpcLinks")
        return next((link for n, link in self.links.values() if n == name), None)

    def create_vpc_link(
        self,
        *,
        name: str,
        subnets: Sequence[str],
        groups: Sequence[str],
        log: CallLog,
        guard: Guard,
    ) -> Found:
        _check(guard, "CreateVpcLink")
        lid = self._id("vl-")
        link = Found(id=lid, status="PENDING", security_groups=tuple(sorted(groups)))
        self.links[lid] = (name, link)
        self._count("apigateway:CreateVpcLink", log, name, lid)
        return link

    def find_api(self, *, name: str, tags: Mapping[str, str], recorded: str) -> Found | None:
        self._count("GetApis")
        return next(
            (
                Found(id=i, endpoint=f"https://{i}.execute-api.local")
                for i, a in self.apis.items()
                if a.name == name and a.tags == dict(tags)
            ),
            None,
        )

    def create_api(
        self, *, name: str, tags: Mapping[str, str], log: CallLog, guard: Guard
    ) -> Found:
        _check(guard, "CreateApi")
        aid = self._id("api")
        self.apis[aid] = _Api(name=name, tags=dict(tags))
        self._count("apigateway:CreateApi", log, name, aid)
        return Found(id=aid, endpoint=f"https://{aid}.execute-api.local")

    def delete_api(self, *, api_id: str, log: CallLog, guard: Guard) -> None:
        _check(guard, "DeleteApi")
        self.apis.pop(api_id, None)
        self._count("apigateway:DeleteApi", log, api_id, api_id)

    def find_integration(self, *, api_id: str, uri: str, link_id: str) -> Found | None:
        self._count("GetIntegrations")
        return next(
            (
                f
                for f in self.apis[api_id].integrations.values()
                if f.uri == uri and f.connection_id == link_id
            ),
            None,
        )

    def create_integration(
        self, *, api_id: str, uri: str, link_id: str, log: CallLog, guard: Guard
    ) -> Found:
        _check(guard, "CreateIntegration")
        found = Found(
            id=self._id("int"), uri=uri, connection_id=link_id, parameters=dict(PATH_MAPPING)
        )
        self.apis[api_id].integrations[found.id] = found
        self._count("apigateway:CreateIntegration", log, api_id, found.id)
        return found

    def update_integration(
        self, *, api_id: str, integration_id: str, log: CallLog, guard: Guard
    ) -> None:
        _check(guard, "UpdateIntegration")
        api = self.apis[api_id]
        api.integrations[integration_id] = replace(
            api.integrations[integration_id], parameters=dict(PATH_MAPPING)
        )
        self._count("apigateway:UpdateIntegration", log, api_id, integration_id)

    def routes(self, *, api_id: str) -> dict[str, tuple[str, str]]:
        self._count("GetRoutes")
        return dict(self.apis[api_id].routes)

    def create_route(
        self, *, api_id: str, key: str, integration_id: str, log: CallLog, guard: Guard
    ) -> str:
        _check(guard, "CreateRoute")
        api = self.apis[api_id]
        if key in api.routes:
            raise _conflict("ConflictException", f"route {key} exists")
        rid = self._id("rt")
        api.routes[key] = (rid, f"integrations/{integration_id}")
        self._count("apigateway:CreateRoute", log, key, rid)
        return rid

    def delete_route(self, *, api_id: str, route_id: str, log: CallLog, guard: Guard) -> None:
        _check(guard, "DeleteRoute")
        api = self.apis[api_id]
        api.routes = {k: v for k, v in api.routes.items() if v[0] != route_id}
        self._count("apigateway:DeleteRoute", log, route_id, route_id)

    def has_stage(self, *, api_id: str) -> bool:
        self._count("GetStages")
        return self.apis[api_id].stage

    def create_stage(self, *, api_id: str, log: CallLog, guard: Guard) -> None:
        _check(guard, "CreateStage")
        if self.apis[api_id].stage:
            raise _conflict("ConflictException", "stage exists")
        self.apis[api_id].stage = True
        self._count("apigateway:CreateStage", log, api_id, STAGE)


class AwsSecretValues:
    """Reads one ``spec.secrets`` value (SSM SecureString or Secrets Manager), for Telegram's
    ``setWebhook`` only. The caller registers the value with the redactor before any use."""

    def __init__(self, *, ssm: Any, secretsmanager: Any, limiter: RateLimiter) -> None:
        self._ssm = ssm
        self._sm = secretsmanager
        self._limiter = limiter

    def __call__(self, ref: SecretRef) -> str:
        """The value of ``ref``; a JSON key suffix on a Secrets Manager ARN selects a field."""
        self._limiter.acquire("ingress")
        if isinstance(ref, SsmSecret):
            try:
                resp = self._ssm.get_parameter(Name=ref.path, WithDecryption=True)
            except Exception as exc:
                raise classify_aws(exc, operation="GetParameter") from exc
            return str(resp["Parameter"]["Value"])
        # arn:aws:secretsmanager:region:account:secret:name[:json-key:stage:version]
        parts = ref.arn.split(":")
        arn, extra = ":".join(parts[:7]), [*parts[7:], "", "", ""][:3]
        kwargs: dict[str, str] = {"SecretId": arn}
        if extra[1]:
            kwargs["VersionStage"] = extra[1]
        if extra[2]:
            kwargs["VersionId"] = extra[2]
        try:
            value = str(self._sm.get_secret_value(**kwargs)["SecretString"])
        except Exception as exc:
            raise classify_aws(exc, operation="GetSecretValue") from exc
        if not extra[0]:
            return value
        try:
            return str(json.loads(value)[extra[0]])
        except (ValueError, KeyError, TypeError):
            raise TerminalError(
                f"secret {ref.name}: no JSON key {extra[0]!r} in its value", reason="SecretKey"
            ) from None
