"""Webhook ingress, the pure part: desired ``spec.ingress`` + observed AWS + recorded ids -> steps.

Design
    The resources of one agent's ingress (API Gateway HTTP API -> VPC Link -> Cloud Map -> task):

    ========================  =========  ==================================================
    resource                  owner      name / identity
    ========================  =========  ==================================================
    Cloud Map namespace       shared     ``<cloudMapNamespace>-<vpc-id>`` (private DNS)
    Cloud Map SRV service     per agent  ``oab-<ns>-<name>`` in that namespace
    security-group rule       shared     tcp ``containerPort`` from each SG to itself
    VPC Link                  shared     ``oab-vpc-link-<vpc-id>``
    HTTP API                  per agent  ``oab-webhook-<ns>-<name>``, tagged with the agent
    integration               per agent  HTTP_PROXY over the VPC Link to the SRV service
    routes                    per agent  ``POST <path>`` for every path
    stage                     per agent  ``$default``, auto-deploy
    ECS service registry      per agent  the SRV service attached to ``oab-<ns>-<name>``
    ========================  =========  ==================================================

    :func:`plan` turns what is wanted and what was observed into an ordered list of
    :class:`Step` s; :mod:`oab.controller.reconcile.ingress` runs them through the adapter
    (:mod:`oab.controller.adapters.ingress`) and records every id in the status.

Invariants
    - **Recorded before relied on.** A step that creates something a later step refers to
      (namespace, SRV service, VPC Link, HTTP API, integration) is the *last* step of its plan:
      the run ends there, the worker commits the new id in the status and the audit row, and
      only the next run (which observes again) builds on it. Steps whose result nothing refers
      to (routes, stage, the rule, the attachment, deletions) may share a run.
    - **No duplicate after a crash.** Every create is preceded, in the same plan, by an
      observation of that exact resource (by recorded id, else by exact name and, for the API,
      by the agent's tags), so a run that died between a create and its commit is followed by
      one that finds and adopts the resource instead of creating a second.
    - **Teardown is exact.** Removing ``spec.ingress`` (or deleting the agent) removes only
      per-agent resources: the registry attachment, then the HTTP API (its integration, routes
      and stage go with it), then the SRV service. Shared resources (namespace, VPC Link,
      security-group rule) are never deleted, so no agent can pull them from under another
      (see "Shared resources" in the README for the cost of keeping them).
    - Route keys are ``POST <path>`` exactly; routes of the agent's API that are no longer
      wanted are pruned.

Time model
    None: pure. Waiting (a VPC Link still PENDING) is a :class:`Step` of kind ``wait`` that the
    reconciler turns into ``requeue_after``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from oab.controller.api.ingress import IngressSpec

__all__ = [
    "RECORD_KEYS",
    "STAGE",
    "Found",
    "IngressRecord",
    "Observed",
    "Step",
    "StepKind",
    "adopt",
    "api_name",
    "namespace_name",
    "plan",
    "route_key",
    "teardown",
    "vpc_link_name",
    "webhook_urls",
]

#: The stage every webhook API gets: no stage prefix in its URLs.
STAGE: Final = "$default"
#: The request parameter mapping that passes the request path through unchanged (upstream's).
PATH_MAPPING: Final = {"overwrite:path": "$request.path"}

StepKind = Literal[
    "create_namespace",
    "create_registry",
    "authorize_rule",
    "create_vpc_link",
    "wait",
    "create_api",
    "create_integration",
    "update_integration",
    "create_route",
    "delete_route",
    "create_stage",
    "attach_registry",
    "detach_registry",
    "delete_api",
    "delete_registry",
]

#: Creates whose result a later step refers to: each ends its plan (module doc).
_BARRIERS: Final = frozenset(
    {"create_namespace", "create_registry", "create_vpc_link", "create_api", "create_integration"}
)


def namespace_name(prefix: str, vpc_id: str) -> str:
    """The shared Cloud Map namespace of a VPC."""
    return f"{prefix}-{vpc_id}"


def vpc_link_name(vpc_id: str) -> str:
    """The shared VPC Link of a VPC."""
    return f"oab-vpc-link-{vpc_id}"


def api_name(namespace: str, name: str) -> str:
    """The agent's HTTP API."""
    return f"oab-webhook-{namespace}-{name}"


def route_key(path: str) -> str:
    """The route key of a webhook path (POST only, as upstream)."""
    return f"POST {path}"


def webhook_urls(endpoint: str, paths: Sequence[str]) -> tuple[str, ...]:
    """The public URLs: the ``$default`` stage adds no prefix."""
    return tuple(endpoint.rstrip("/") + p for p in paths)


#: Keys of the recorded-id map stored in ``status.ingress`` (besides ``route <key>`` entries).
RECORD_KEYS: Final = (
    "vpcId",
    "namespaceId",
    "registryId",
    "registryArn",
    "ruleGroups",
    "vpcLinkId",
    "apiId",
    "apiEndpoint",
    "integrationId",
    "stage",
    "attached",
    "specHash",
    "telegram",
)


@dataclass(frozen=True, kw_only=True)
class IngressRecord:
    """Exact ids of what this agent's ingress created or adopted (stored in its status).

    Shared ids (namespace, VPC Link, rule groups) are recorded for ``describe`` and for the
    audit; only per-agent ids are ever torn down.
    """

    vpc_id: str = ""
    namespace_id: str = ""
    registry_id: str = ""
    registry_arn: str = ""
    rule_groups: str = ""
    vpc_link_id: str = ""
    api_id: str = ""
    api_endpoint: str = ""
    integration_id: str = ""
    stage: str = ""
    attached: str = ""
    #: Digest of the desired ingress (spec + networking) the record converged on ("" while not).
    spec_hash: str = ""
    #: Digest of the last Telegram registration (URL and secret versions), "failed:" when not.
    telegram: str = ""
    routes: Mapping[str, str] = field(default_factory=dict)

    def to_map(self) -> dict[str, str]:
        """The flat string map stored in ``status.ingress`` (empty values left out)."""
        out = {
            "vpcId": self.vpc_id,
            "namespaceId": self.namespace_id,
            "registryId": self.registry_id,
            "registryArn": self.registry_arn,
            "ruleGroups": self.rule_groups,
            "vpcLinkId": self.vpc_link_id,
            "apiId": self.api_id,
            "apiEndpoint": self.api_endpoint,
            "integrationId": self.integration_id,
            "stage": self.stage,
            "attached": self.attached,
            "specHash": self.spec_hash,
            "telegram": self.telegram,
        }
        out.update({f"route {k}": v for k, v in self.routes.items()})
        return {k: v for k, v in sorted(out.items()) if v}

    @classmethod
    def from_map(cls, data: Mapping[str, str]) -> IngressRecord:
        """Parse ``status.ingress``; unknown keys are ignored (a newer writer's)."""
        return cls(
            vpc_id=data.get("vpcId", ""),
            namespace_id=data.get("namespaceId", ""),
            registry_id=data.get("registryId", ""),
            registry_arn=data.get("registryArn", ""),
            rule_groups=data.get("ruleGroups", ""),
            vpc_link_id=data.get("vpcLinkId", ""),
            api_id=data.get("apiId", ""),
            api_endpoint=data.get("apiEndpoint", ""),
            integration_id=data.get("integrationId", ""),
            stage=data.get("stage", ""),
            attached=data.get("attached", ""),
            spec_hash=data.get("specHash", ""),
            telegram=data.get("telegram", ""),
            routes={k[6:]: v for k, v in data.items() if k.startswith("route ")},
        )

    @property
    def per_agent(self) -> bool:
        """Whether any per-agent resource is recorded (teardown has work to do)."""
        return bool(self.registry_id or self.api_id or self.attached)


@dataclass(frozen=True, kw_only=True)
class Found:
    """One observed resource: its id, and the attributes the plan compares."""

    id: str
    arn: str = ""
    status: str = ""
    endpoint: str = ""
    uri: str = ""
    connection_id: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)
    security_groups: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What the adapter read this run (``None``: looked for and absent)."""

    vpc_id: str
    namespace: Found | None = None
    registry: Found | None = None
    ruled_groups: frozenset[str] = frozenset()
    vpc_link: Found | None = None
    api: Found | None = None
    integration: Found | None = None
    #: Route key -> (route id, target) of every route of the agent's API.
    routes: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    stage: bool = False
    attached: tuple[str, ...] = ()  # registry ARNs attached to the ECS service


@dataclass(frozen=True, kw_only=True)
class Step:
    """One call the reconciler makes. ``target`` is the path, route id or resource id."""

    kind: StepKind
    target: str = ""
    reason: str = ""

    @property
    def barrier(self) -> bool:
        """Whether the run ends after this step (its result must be recorded first)."""
        return self.kind in _BARRIERS or self.kind == "wait"


def _cut(steps: list[Step]) -> list[Step]:
    """Steps up to and including the first barrier (module doc, "Recorded before relied on")."""
    for i, s in enumerate(steps):
        if s.barrier:
            return steps[: i + 1]
    return steps


def plan(
    *,
    spec: IngressSpec,
    observed: Observed,
    security_groups: Sequence[str],
) -> list[Step]:
    """The ordered steps that bring the observed ingress to ``spec`` (empty: converged): the
    Cloud Map namespace and service, the security-group rules, the gateway chain (VPC Link, API,
    integration; each one a barrier), the routes, the stage and the registry's attachment."""
    if observed.namespace is None:
        return [Step(kind="create_namespace")]
    if observed.registry is None:
        return [Step(kind="create_registry")]
    rules = [
        Step(kind="authorize_rule", target=group)
        for group in sorted(set(security_groups) - observed.ruled_groups)
    ]
    integration = observed.integration
    if (pending := _pending_gateway(observed)) is not None or integration is None:
        return _cut([*rules, pending or Step(kind="create_integration")])
    steps = [*rules, *_route_steps(spec, observed, integration)]
    if not observed.stage:
        steps.append(Step(kind="create_stage"))
    if observed.attached != (observed.registry.arn,):
        steps.append(Step(kind="attach_registry", target=observed.registry.arn))
    return steps


def _pending_gateway(observed: Observed) -> Step | None:
    """The first missing (or not yet available) link of VPC Link -> API -> integration."""
    if observed.vpc_link is None:
        return Step(kind="create_vpc_link")
    if observed.vpc_link.status != "AVAILABLE":
        return Step(kind="wait", reason=f"VPC Link {observed.vpc_link.status}")
    if observed.api is None:
        return Step(kind="create_api")
    if observed.integration is None:
        return Step(kind="create_integration")
    return None


def _route_steps(spec: IngressSpec, observed: Observed, integration: Found) -> list[Step]:
    """The integration's parameters, then the routes: deletions first (a route of a wanted key
    that targets another integration, left by an earlier one, is replaced, not kept)."""
    steps: list[Step] = []
    if dict(integration.parameters) != PATH_MAPPING:
        steps.append(Step(kind="update_integration", target=integration.id))
    wanted = {route_key(p) for p in spec.paths}
    target = f"integrations/{integration.id}"
    kept: set[str] = set()
    for key, (route_id, route_target) in sorted(observed.routes.items()):
        if key in wanted and route_target == target:
            kept.add(key)
        else:
            steps.append(Step(kind="delete_route", target=route_id, reason=key))
    steps.extend(
        Step(kind="create_route", target=p) for p in spec.paths if route_key(p) not in kept
    )
    return steps


def teardown(*, record: IngressRecord, attached: Sequence[str]) -> list[Step]:
    """The per-agent teardown, in order: detach, delete the API, delete the SRV service.

    ``attached`` is what the ECS service has now (empty when the service is gone). Only ids in
    ``record`` are deleted; shared resources never are.
    """
    steps: list[Step] = []
    if attached:
        steps.append(Step(kind="detach_registry"))
    if record.api_id:
        steps.append(Step(kind="delete_api", target=record.api_id))
    if record.registry_id:
        steps.append(Step(kind="delete_registry", target=record.registry_id))
    return steps


def adopt(record: IngressRecord, observed: Observed) -> IngressRecord:
    """``record`` with every observed id filled in (what a crashed run created, or drift)."""
    return replace(
        record,
        vpc_id=observed.vpc_id,
        namespace_id=observed.namespace.id if observed.namespace else "",
        registry_id=observed.registry.id if observed.registry else "",
        registry_arn=observed.registry.arn if observed.registry else "",
        vpc_link_id=observed.vpc_link.id if observed.vpc_link else "",
        api_id=observed.api.id if observed.api else "",
        api_endpoint=observed.api.endpoint if observed.api else "",
        integration_id=observed.integration.id if observed.integration else "",
        stage=STAGE if observed.stage else "",
        rule_groups=",".join(sorted(observed.ruled_groups)),
        attached=",".join(observed.attached),
        routes={k[5:]: v[0] for k, v in observed.routes.items() if k.startswith("POST ")},
    )
