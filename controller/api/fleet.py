"""``OABFleet``: several agents from one manifest, each expanded to a full ``OABService``.

Design
    A fleet's ``spec.defaults`` is deep-merged under each ``spec.agents[i]`` and the result is an
    ordinary ``OABService`` labelled ``oab.dev/fleet: <fleet name>`` (:func:`expand_fleet`); the
    store keeps the fleet and writes its children, the controller reconciles only the children.
    ``ingress``, ``exec``, ``suspend`` and ``schedules`` take the same values as on a single
    agent; an agent's own value replaces the default's whole value (no merge: a schedule list
    or a path list is one decision). Ingress paths get no ``${name}`` interpolation: each agent
    has its own HTTP API (``oab-webhook-<ns>-<name>``), so the same path never collides, and a
    path must be the ``webhook_path`` OpenAB serves, which is per platform, not per agent.
    Fleet members are suspended through the fleet (``oabctl scale`` refuses them), hence
    ``suspend`` here.

Invariants
    - A fleet is valid only if every child it expands to is a valid ``OABService``; an issue of
      a child is blamed on the fleet field it came from (:func:`blame_fleet_issue`), so the
      message names the line the user wrote.
    - Agent names are unique within a fleet.

Time model: none.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr, ValidationError, model_validator

from oab.controller.api.ingress import IngressSpec
from oab.controller.api.issues import FieldIssue, InvalidDocument, issues_from_validation_error
from oab.controller.api.schedule import Schedules
from oab.controller.api.service import (
    AgentKey,
    ApiModel,
    CapacityProvider,
    DnsLabel,
    Networking,
    OABService,
    ObjectMeta,
    SecretRef,
    TaskDefinitionSpec,
    api_error,
    canonical_digest,
)
from oab.controller.base.names import API_VERSION, FLEET_LABEL

__all__ = [
    "DISCORD_TOKEN_PATH",
    "FleetAgent",
    "FleetDefaults",
    "FleetSpec",
    "OABFleet",
    "blame_fleet_issue",
    "expand_fleet",
]


class FleetDefaults(ApiModel):
    """``spec.defaults``: what every agent of a fleet starts from."""

    # Bounded through the children, which are each validated (errors blamed on this field).
    cpu: StrictInt | None = None
    memory: StrictInt | None = None
    task_definition: TaskDefinitionSpec | None = None
    bootstrap_from: StrictStr | None = None
    networking: Networking | None = None
    capacity_provider: CapacityProvider | None = None
    platform: dict[StrictStr, Any] | None = None
    secrets: list[SecretRef] = Field(default_factory=list)
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    config: dict[StrictStr, Any] = Field(
        default_factory=dict, description="Config parts deep-merged under each agent's config."
    )
    # Left out of dumps while unset: the spec digest of every fleet without them is unchanged.
    ingress: IngressSpec | None = Field(default=None, exclude_if=lambda v: v is None)
    exec: StrictBool | None = Field(default=None, exclude_if=lambda v: v is None)
    suspend: StrictBool | None = Field(default=None, exclude_if=lambda v: v is None)
    schedules: Schedules | None = Field(default=None, exclude_if=lambda v: v is None)


class FleetAgent(ApiModel):
    """``spec.agents[]``: one agent of the fleet; fields override the defaults."""

    name: DnsLabel
    config: dict[StrictStr, Any] = Field(default_factory=dict)
    # Bounded through the children, which are each validated (errors blamed on this field).
    cpu: StrictInt | None = None
    memory: StrictInt | None = None
    image: StrictStr | None = Field(default=None, description="Shortcut for taskDefinition.image.")
    task_definition: TaskDefinitionSpec | None = None
    bootstrap_from: StrictStr | None = None
    capacity_provider: CapacityProvider | None = None
    networking: Networking | None = None
    secrets: list[SecretRef] | None = Field(
        default=None, description="Merged with the defaults by name (the agent's entry wins)."
    )
    env: dict[StrictStr, StrictStr] | None = None
    platform: dict[StrictStr, Any] | None = None
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    # Left out of dumps while unset: the spec digest of every fleet without them is unchanged.
    ingress: IngressSpec | None = Field(default=None, exclude_if=lambda v: v is None)
    exec: StrictBool | None = Field(default=None, exclude_if=lambda v: v is None)
    suspend: StrictBool | None = Field(default=None, exclude_if=lambda v: v is None)
    schedules: Schedules | None = Field(default=None, exclude_if=lambda v: v is None)


class FleetSpec(ApiModel):
    """``spec`` of an OABFleet."""

    defaults: FleetDefaults = Field(default_factory=FleetDefaults)
    agents: list[FleetAgent] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_agent_names(self) -> FleetSpec:
        seen: set[str] = set()
        for i, agent in enumerate(self.agents):
            if agent.name in seen:
                raise api_error(
                    "duplicate_agent",
                    f"agent {agent.name} appears twice",
                    "agent names are unique within a fleet",
                    path=f"agents[{i}].name",
                )
            if agent.image is not None and agent.task_definition is not None:
                raise api_error(
                    "image_conflict",
                    "both image and taskDefinition are set",
                    "write only one of them",
                    path=f"agents[{i}].image",
                )
            seen.add(agent.name)
        return self


class OABFleet(ApiModel):
    """One manifest describing N agents; expands to one OABService per agent."""

    api_version: Literal["oab.dev/v1"] = API_VERSION
    kind: Literal["OABFleet"] = "OABFleet"
    metadata: ObjectMeta
    spec: FleetSpec

    @property
    def key(self) -> AgentKey:
        """``namespace/name`` of the fleet object itself."""
        return AgentKey(f"{self.metadata.namespace}/{self.metadata.name}")

    def spec_digest(self) -> str:
        """sha256 (hex) of the spec's canonical JSON."""
        return canonical_digest(self.spec.model_dump(mode="json", by_alias=True))

    def to_manifest(self) -> dict[str, Any]:
        """The object as manifest data (camelCase, no unset optional fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _deep_merge(base: Any, over: Any) -> Any:
    # Mappings merge key by key; anything else (lists included) is replaced by the override.
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = {k: copy.deepcopy(v) for k, v in base.items()}
        for k, v in over.items():
            out[k] = _deep_merge(out[k], v) if k in out else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


#: Convention for fleet agents: the Discord token of agent NAME in NAMESPACE lives here.
DISCORD_TOKEN_PATH = "/oab/{namespace}/{name}/discord-token"


def _child_document(fleet: OABFleet, index: int) -> dict[str, Any]:
    """The raw OABService manifest of fleet agent ``index`` (validated by the caller)."""
    defaults = fleet.spec.defaults
    agent = fleet.spec.agents[index]
    ns = fleet.metadata.namespace
    spec: dict[str, Any] = {}
    cpu = agent.cpu if agent.cpu is not None else defaults.cpu
    memory = agent.memory if agent.memory is not None else defaults.memory
    if cpu is not None:
        spec["cpu"] = cpu
    if memory is not None:
        spec["memory"] = memory
    if agent.image is not None:
        spec["taskDefinition"] = {"image": agent.image}
    elif agent.task_definition is not None:
        spec["taskDefinition"] = agent.task_definition.model_dump(by_alias=True)
    elif defaults.task_definition is not None:
        spec["taskDefinition"] = defaults.task_definition.model_dump(by_alias=True)
    bootstrap = agent.bootstrap_from or defaults.bootstrap_from
    if bootstrap is not None:
        spec["bootstrapFrom"] = bootstrap
    networking = agent.networking or defaults.networking
    if networking is not None:
        spec["networking"] = networking.model_dump(by_alias=True)
    capacity = agent.capacity_provider or defaults.capacity_provider
    if capacity is not None:
        spec["capacityProvider"] = capacity
    platform = _deep_merge(defaults.platform or {}, agent.platform or {})
    if platform:
        spec["platform"] = platform
    env = {**defaults.env, **(agent.env or {})}
    if env:
        spec["env"] = env
    config = _deep_merge(defaults.config, agent.config)
    spec["config"] = config
    secrets: dict[str, dict[str, Any]] = {}
    for secret in [*defaults.secrets, *(agent.secrets or [])]:
        secrets[secret.name] = secret.model_dump(by_alias=True)
    token = _discord_token_var(config)
    if token is not None and token not in secrets and token not in env:
        secrets[token] = {
            "name": token,
            "source": "ssm",
            "path": DISCORD_TOKEN_PATH.format(namespace=ns, name=agent.name),
        }
    spec["secrets"] = list(secrets.values())
    spec.update(_agent_or_default(agent, defaults))
    labels = {**fleet.metadata.labels, **agent.labels, FLEET_LABEL: fleet.metadata.name}
    return {
        "apiVersion": API_VERSION,
        "kind": "OABService",
        "metadata": {"name": agent.name, "namespace": ns, "labels": labels},
        "spec": spec,
    }


def _agent_or_default(agent: FleetAgent, defaults: FleetDefaults) -> dict[str, Any]:
    """``ingress``, ``exec``, ``suspend``, ``schedules`` of the child: the agent's when set, else
    the defaults' (whole values), left out when neither sets them (as on a single agent)."""
    out: dict[str, Any] = {}
    ingress = agent.ingress or defaults.ingress
    if ingress is not None:
        out["ingress"] = ingress.model_dump(mode="json", by_alias=True)
    for key in ("exec", "suspend"):
        value = getattr(agent, key)
        value = getattr(defaults, key) if value is None else value
        if value is not None:
            out[key] = value
    schedules = agent.schedules if agent.schedules is not None else defaults.schedules
    if schedules is not None:
        out["schedules"] = [
            s.model_dump(mode="json", by_alias=True, exclude_none=True) for s in schedules
        ]
    return out


def _discord_token_var(config: Mapping[str, Any]) -> str | None:
    discord = config.get("discord")
    if not isinstance(discord, Mapping) or discord.get("enabled") is False:
        return None
    token = discord.get("bot_token")
    if isinstance(token, str):
        match = re.fullmatch(r"\$\{([A-Z_][A-Z0-9_]*)\}", token)
        if match:
            return match.group(1)
    return None


def expand_fleet(fleet: OABFleet) -> list[OABService]:
    """One validated OABService per agent, labelled ``oab.dev/fleet: <fleet name>``.

    Per agent: cpu, memory, image/taskDefinition, bootstrapFrom, networking, capacityProvider,
    ingress, exec, suspend, schedules override the defaults; env and secrets merge by name (the
    agent wins); platform and config deep-merge (mappings key by key, lists replaced). By
    convention, a Discord agent whose ``bot_token`` placeholder has no provider gets it from SSM
    ``/oab/{namespace}/{name}/discord-token``.

    Raises ``InvalidDocument`` with paths under ``spec.agents[i]`` (or ``spec.defaults`` when the
    offending value came from there) if any child is invalid.
    """
    children: list[OABService] = []
    issues: list[FieldIssue] = []
    for index in range(len(fleet.spec.agents)):
        raw = _child_document(fleet, index)
        try:
            children.append(OABService.model_validate(raw))
        except ValidationError as exc:
            for issue in issues_from_validation_error(exc, raw):
                issues.append(_blame_fleet_field(fleet, index, issue))
    if issues:
        raise InvalidDocument(issues)
    return children


_AGENT_KEYS = {
    "cpu": "cpu",
    "memory": "memory",
    "taskDefinition": "image",
    "bootstrapFrom": "bootstrapFrom",
    "networking": "networking",
    "capacityProvider": "capacityProvider",
    "platform": "platform",
    "env": "env",
    "config": "config",
    "secrets": "secrets",
    "ingress": "ingress",
    "exec": "exec",
    "suspend": "suspend",
    "schedules": "schedules",
}


def blame_fleet_issue(fleet: OABFleet, index: int, issue: FieldIssue) -> FieldIssue:
    """Map an issue of fleet child ``index`` onto the fleet field that produced the value.

    For issues found after expansion (``oabctl apply`` rendering each child): a child's
    ``spec.X`` is blamed on ``spec.agents[index].X`` or ``spec.defaults.X``, its
    ``metadata.name`` on the agent's ``name`` and its ``metadata.namespace`` on the fleet's.
    """
    return _blame_fleet_field(fleet, index, issue)


def _blame_fleet_field(fleet: OABFleet, index: int, issue: FieldIssue) -> FieldIssue:
    """Map an issue of a child (``spec.X``) onto the fleet field that produced the value."""
    path = issue.path
    if path[:2] == ("metadata", "name"):
        return FieldIssue(("spec", "agents", index, "name"), issue.message, issue.hint)
    if path[:1] == ("metadata",):
        return issue
    if len(path) < 2 or path[0] != "spec":
        return FieldIssue(("spec", "agents", index, *path), issue.message, issue.hint)
    top = str(path[1])
    agent = fleet.spec.agents[index].model_dump(by_alias=True, exclude_none=True)
    defaults = fleet.spec.defaults.model_dump(by_alias=True, exclude_none=True)
    rest = path[2:]
    if top in ("config", "platform", "env"):
        # Blame whichever side holds more of the path (the agent on a tie): a missing key is
        # reported where its parent table was written.
        mine, theirs = _depth(agent.get(top), rest), _depth(defaults.get(top), rest)
        if (top in agent and mine >= theirs) or top not in defaults:
            return FieldIssue(("spec", "agents", index, top, *rest), issue.message, issue.hint)
        return FieldIssue(("spec", "defaults", top, *rest), issue.message, issue.hint)
    if top == "taskDefinition":
        if "image" in agent:
            return FieldIssue(("spec", "agents", index, "image"), issue.message, issue.hint)
        if "taskDefinition" in agent or "taskDefinition" not in defaults:
            where: tuple[str | int, ...] = ("spec", "agents", index, top, *rest)
        else:
            where = ("spec", "defaults", top, *rest)
        return FieldIssue(where, issue.message, issue.hint)
    if top == "secrets" and rest and isinstance(rest[0], int):
        # Secrets of the child are defaults then agent entries, merged by name.
        return FieldIssue(("spec", "agents", index, "secrets", *rest), issue.message, issue.hint)
    key = _AGENT_KEYS.get(top, top)
    if key in agent or key not in defaults:
        return FieldIssue(("spec", "agents", index, key, *rest), issue.message, issue.hint)
    return FieldIssue(("spec", "defaults", key, *rest), issue.message, issue.hint)


def _depth(data: Any, path: Sequence[str | int]) -> int:
    """How many leading elements of ``path`` exist in ``data``."""
    depth = 0
    for part in path:
        in_mapping = isinstance(data, Mapping) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_mapping or in_list):
            break
        data = data[part]
        depth += 1
    return depth
