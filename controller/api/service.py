"""The ``oab.dev/v1`` API: ``OABService`` and ``OABFleet`` (pydantic v2).

Design
    Manifests are YAML with camelCase keys (``taskDefinition``, ``bootstrapFrom``); the Python
    attributes are snake_case (an alias generator maps them; ``populate_by_name`` also accepts the
    snake_case spelling). ``spec.config`` is the exception: its keys are OpenAB's own config.toml
    names (see ``oab.controller.api.openab``). Every model forbids unknown keys except
    ``spec.platform``, whose non-``ecs`` keys (``k8s``, ...) are kept verbatim and ignored.

Invariants (checked at validation time, before anything is stored or rendered)
    - ``metadata.name`` and ``metadata.namespace`` are RFC 1123 DNS labels (lowercase
      alphanumerics and ``-``, 1-63 chars, alphanumeric at both ends). They become S3 keys, SSM
      paths and ECS names (``oab-{ns}-{name}``, at most 4 + 63 + 1 + 63 = 131 characters, well
      under ECS's 255).
    - ``spec.replicas`` is 1: one bot token is one connection.
    - ``spec.cpu``/``spec.memory`` are a valid Fargate pair.
    - Every integer is bounded: generations by :data:`MAX_GENERATION`, status counters by
      :data:`MAX_COUNT`, the rest by their own rules (``replicas`` 1, Fargate cpu/memory).
    - ``spec.secrets`` names are unique env-var names; SSM paths and Secrets Manager ARNs are
      well formed. ``spec.env`` names do not collide with secrets nor with the variables the
      controller sets itself (``CONFIG_ARTIFACT_PATH``, ``BOOTSTRAP_FROM``).
    - Every ``${VAR}`` in ``spec.config`` is provided by ``spec.secrets`` or ``spec.env``. A
      secret may appear only as a token field (``openab.TOKEN_FIELDS``), never where OpenAB
      would print or pass it on (args, env, cron messages, URLs); a token field may name only a
      secret; a plain ``spec.env`` value that OpenAB substitutes into config.toml's *text* holds
      no quote, backslash, line break or control character (it would rewrite the file).
    - No string (value or key) anywhere in the document looks like a credential
      (``oab.controller.base.redact.secret_kind``, the one list of shapes); the issue names the
      field path and the shape, never the value.
    - Which roles, secrets and ``bootstrapFrom`` an agent may use depends on the platform's
      settings, so it is checked where those are known: by the renderer
      (``oab.controller.core.tenancy``), at ``oabctl apply`` and at every reconcile.
    - An ``OABFleet`` is valid only if every child it expands to is a valid ``OABService``.

Errors
    ``parse_document`` raises ``InvalidDocument`` carrying ``FieldIssue``s (field path, message,
    hint). Validators attach a sub-path in the error context (``ctx["path"]``) when a rule spans
    fields, so the issue points at the offending field, not at the enclosing object.

Time model
    The API holds wall-clock timestamps only as stored/shown values (creation, deletion,
    lastReconciled, lastTransitionTime); nothing here reads a clock.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, Literal, NewType

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from oab.controller.api.openab import TOKEN_FIELDS, OpenABConfig
from oab.controller.base.names import API_VERSION, FLEET_LABEL
from oab.controller.base.redact import secret_kind
from oab.controller.base.taskcontract import RESERVED_ENV

__all__ = [
    "FARGATE_MEMORY",
    "MAX_COUNT",
    "MAX_GENERATION",
    "AgentKey",
    "Condition",
    "ConditionStatus",
    "EcsPlatform",
    "EffectiveEcs",
    "FieldIssue",
    "FleetAgent",
    "FleetDefaults",
    "FleetSpec",
    "InvalidDocument",
    "Networking",
    "OABFleet",
    "OABService",
    "OABServiceSpec",
    "ObjectMeta",
    "Phase",
    "Platform",
    "SecretRef",
    "SecretsManagerSecret",
    "ServiceStatus",
    "SsmSecret",
    "TaskDefinitionSpec",
    "blame_fleet_issue",
    "ecs_name_rivals",
    "expand_fleet",
    "is_dns_label",
    "issues_from_validation_error",
    "parse_document",
    "parse_field_path",
    "secret_literal_issues",
]

#: Largest ``metadata.generation`` (and observed generation): exact in JSON for every client.
MAX_GENERATION: Final = 2**53 - 1
#: Bounds of counters in ``status`` (task counts).
MAX_COUNT: Final = 1_000_000

#: ``"{namespace}/{name}"``: the identity of one agent everywhere in the control plane.
AgentKey = NewType("AgentKey", str)


def _fargate_table() -> dict[int, tuple[int, ...]]:
    def steps(lo: int, hi: int, step: int) -> tuple[int, ...]:
        return tuple(range(lo, hi + 1, step))

    return {
        256: (512, 1024, 2048),
        512: steps(1024, 4096, 1024),
        1024: steps(2048, 8192, 1024),
        2048: steps(4096, 16384, 1024),
        4096: steps(8192, 30720, 1024),
        8192: steps(16384, 61440, 4096),
        16384: steps(32768, 122880, 8192),
    }


#: Valid Fargate task sizes: cpu units -> allowed memory (MiB).
FARGATE_MEMORY: dict[int, tuple[int, ...]] = _fargate_table()

# Every validation pattern below is applied with ``fullmatch`` (never ``match`` with ``$``, which
# also accepts a trailing newline: ``bot\n`` would become the ECS service ``oab-team-bot\n``).
_DNS_LABEL_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
_SSM_NAME_RE = re.compile(r"(?:/[A-Za-z0-9_.\-]+)+|[A-Za-z0-9_.\-]+")
_SSM_ARN_RE = re.compile(
    r"arn:aws[a-z\-]*:ssm:[a-z0-9\-]+:\d{12}:parameter/[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*"
)
# Optional ECS suffix: `:json-key:version-stage:version-id` (each part may be empty).
_SM_ARN_RE = re.compile(
    r"arn:aws[a-z\-]*:secretsmanager:[a-z0-9\-]+:\d{12}:secret:[A-Za-z0-9/_+=.@\-]+"
    r"(?::[^:\s]*:[^:\s]*:[^:\s]*)?"
)
_ROLE_RE = re.compile(r"arn:aws[a-z\-]*:iam::\d{12}:role/[\w+=,.@/\-]+|[\w+=,.@\-]{1,64}")
_S3_URI_RE = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/\S+")
_SUBNET_RE = re.compile(r"subnet-[0-9a-f]{8,17}")
_SG_RE = re.compile(r"sg-[0-9a-f]{8,17}")
_IMAGE_RE = re.compile(r"[a-z0-9][A-Za-z0-9._\-/:@]*")


def _error(kind: str, message: str, hint: str | None = None, *, path: str = "") -> Exception:
    ctx: dict[str, Any] = {"text": message}
    if hint:
        ctx["hint"] = hint
    if path:
        ctx["path"] = path
    return PydanticCustomError(kind, "{text}", ctx)


def _pattern(regex: re.Pattern[str], what: str, hint: str) -> AfterValidator:
    def check(value: str) -> str:
        if regex.fullmatch(value) is None:
            raise _error("format", f"{value!r} is not {what}", hint)
        return value

    return AfterValidator(check)


def _dns_label(value: str) -> str:
    if not is_dns_label(value):
        raise _error(
            "dns_label",
            f"{value!r} is not a DNS label",
            "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or "
            "digit (it becomes part of S3 keys, SSM paths and ECS names)",
        )
    return value


DnsLabel = Annotated[StrictStr, AfterValidator(_dns_label)]


def is_dns_label(value: str) -> bool:
    """Whether ``value`` is a valid ``metadata.name`` / ``metadata.namespace``."""
    return len(value) <= 63 and _DNS_LABEL_RE.fullmatch(value) is not None


def ecs_name_rivals(namespace: str, name: str) -> list[tuple[str, str]]:
    """Every other valid ``(namespace, name)`` with the same :func:`ecs_name`, shortest ns first.

    Labels may contain ``-``, so the join is ambiguous: ``a-b``/``c`` and ``a``/``b-c`` both
    become ``oab-a-b-c``. The store refuses to create an agent whose ECS name a stored agent
    already has, and the reconciler never touches a service tagged with another agent.
    """
    joined = f"{namespace}-{name}"
    rivals = []
    for i, char in enumerate(joined):
        if char == "-" and i != len(namespace):
            ns, nm = joined[:i], joined[i + 1 :]
            if is_dns_label(ns) and is_dns_label(nm):
                rivals.append((ns, nm))
    return rivals


EnvVarName = Annotated[
    StrictStr,
    _pattern(
        _ENV_NAME_RE,
        "an environment variable name",
        "use uppercase letters, digits and '_', not starting with a digit (e.g. DISCORD_TOKEN)",
    ),
]


class _Model(BaseModel):
    """Base of every API object: camelCase in YAML, snake_case in Python, unknown keys refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        hide_input_in_errors=True,
    )


class ObjectMeta(_Model):
    """``metadata``: identity, generation and tombstone of an object."""

    name: DnsLabel
    namespace: DnsLabel = "default"
    generation: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_GENERATION,
        description="Bumped by oabctl apply when the spec changes.",
    )
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    annotations: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = Field(
        default=None, description="Set by oabctl delete: the object is a tombstone."
    )
    finalizers: list[StrictStr] = Field(default_factory=list)
    uid: StrictStr | None = None


class SsmSecret(_Model):
    """A secret injected from an SSM parameter (name or ARN)."""

    name: EnvVarName
    source: Literal["ssm"]
    path: Annotated[
        StrictStr,
        Field(max_length=2048),
        AfterValidator(_ssm_path),
    ]
    auto_restart: StrictBool = False


def _ssm_path(value: str) -> str:
    if _SSM_NAME_RE.fullmatch(value) is None and _SSM_ARN_RE.fullmatch(value) is None:
        raise _error(
            "format",
            f"{value!r} is not an SSM parameter name or ARN",
            "write /oab/NAMESPACE/NAME/discord-token or "
            "arn:aws:ssm:REGION:ACCOUNT:parameter/oab/...",
        )
    return value


class SecretsManagerSecret(_Model):
    """A secret injected from AWS Secrets Manager (full ARN, optional ``:json-key::``)."""

    name: EnvVarName
    source: Literal["secretsmanager"]
    arn: Annotated[
        StrictStr,
        _pattern(
            _SM_ARN_RE,
            "a Secrets Manager ARN",
            "write arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME (optionally followed by "
            ":json-key:version-stage:version-id)",
        ),
    ]
    auto_restart: StrictBool = False


SecretRef = Annotated[SsmSecret | SecretsManagerSecret, Field(discriminator="source")]


class Networking(_Model):
    """awsvpc networking of the task."""

    subnets: list[
        Annotated[StrictStr, _pattern(_SUBNET_RE, "a subnet id", "write subnet-0123abcd...")]
    ] = Field(min_length=1)
    security_groups: list[
        Annotated[StrictStr, _pattern(_SG_RE, "a security group id", "write sg-0123abcd...")]
    ] = Field(default_factory=list)
    assign_public_ip: StrictBool = False


class TaskDefinitionSpec(_Model):
    """``spec.taskDefinition``: the container image."""

    image: Annotated[
        StrictStr,
        Field(max_length=255),
        _pattern(_IMAGE_RE, "a container image reference", "write REGISTRY/REPO:TAG or @sha256"),
    ]


CapacityProvider = Literal["FARGATE", "FARGATE_SPOT"]
RoleRef = Annotated[
    StrictStr, _pattern(_ROLE_RE, "an IAM role ARN or name", "write arn:aws:iam::ACCOUNT:role/NAME")
]


class EcsPlatform(_Model):
    """``spec.platform.ecs``: ECS-specific settings; override the top-level forms."""

    capacity_provider: CapacityProvider | None = None
    execution_role: RoleRef | None = None
    task_role: RoleRef | None = None
    networking: Networking | None = None


class Platform(_Model):
    """``spec.platform``: ``ecs`` is validated; every other key is kept verbatim and ignored."""

    model_config = ConfigDict(extra="allow")

    ecs: EcsPlatform | None = None


@dataclass(frozen=True, kw_only=True)
class EffectiveEcs:
    """The ECS settings of one service after ``platform.ecs`` overrides the top level.

    Roles are ``None`` when the manifest leaves them to the controller's settings.
    """

    capacity_provider: CapacityProvider
    execution_role: str | None
    task_role: str | None
    networking: Networking | None


def _shown(value: int) -> str:
    # A hostile manifest may hold a number thousands of digits long: never echo it whole.
    text = str(value)
    return text if len(text) <= 20 else f"a {len(text)}-digit number"


def _replicas(value: int) -> int:
    if value != 1:
        raise _error(
            "replicas",
            f"replicas: {_shown(value)} is not supported; only 1 is valid",
            "one bot token holds one connection: scale out with more agents (an OABFleet), "
            "each with its own token",
        )
    return value


def _fargate_cpu(value: int) -> int:
    if value not in FARGATE_MEMORY:
        raise _error(
            "fargate_cpu",
            f"{_shown(value)} is not a Fargate CPU value",
            "use one of " + ", ".join(str(c) for c in FARGATE_MEMORY),
        )
    return value


def _s3_uri(value: str) -> str:
    if _S3_URI_RE.fullmatch(value) is None:
        raise _error(
            "format",
            f"{value!r} is not an s3:// URI",
            "write s3://BUCKET/KEY.tar.gz (an archive of agent state; never secrets or "
            "config.toml)",
        )
    return value


def _env_names(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if _ENV_NAME_RE.fullmatch(key) is None:
            raise _error(
                "env_name",
                f"{key!r} is not an environment variable name",
                "use uppercase letters, digits and '_', not starting with a digit",
                path=key,
            )
        if key in RESERVED_ENV:
            raise _error(
                "reserved_env",
                f"{key} is set by the controller",
                "remove it: the controller pins " + " and ".join(sorted(RESERVED_ENV)),
                path=key,
            )
    return value


class OABServiceSpec(_Model):
    """``spec`` of an OABService: one agent, one ECS service."""

    # Bounded by their rules: replicas is 1, cpu a Fargate value, memory a Fargate size for cpu.
    replicas: Annotated[StrictInt, AfterValidator(_replicas)] = 1
    cpu: Annotated[StrictInt, AfterValidator(_fargate_cpu)]
    memory: StrictInt = Field(description="MiB; a Fargate size for cpu.")
    task_definition: TaskDefinitionSpec
    bootstrap_from: Annotated[StrictStr, AfterValidator(_s3_uri)] | None = None
    secrets: list[SecretRef] = Field(default_factory=list)
    env: Annotated[dict[StrictStr, StrictStr], AfterValidator(_env_names)] = Field(
        default_factory=dict, description="Plain (non-secret) container environment variables."
    )
    networking: Networking | None = None
    capacity_provider: CapacityProvider = "FARGATE"
    config: OpenABConfig
    platform: Platform | None = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> OABServiceSpec:
        allowed = FARGATE_MEMORY.get(self.cpu)
        if allowed is not None and self.memory not in allowed:
            raise _error(
                "fargate_memory",
                f"{_shown(self.memory)} is not a valid Fargate memory size for cpu {self.cpu}",
                f"with cpu {self.cpu} use memory {_describe(allowed)}",
                path="memory",
            )
        seen: set[str] = set()
        for i, secret in enumerate(self.secrets):
            if secret.name in seen:
                raise _error(
                    "duplicate_secret",
                    f"secret {secret.name} is declared twice",
                    "each secret name is one container variable: keep one entry",
                    path=f"secrets[{i}].name",
                )
            if secret.name in RESERVED_ENV:
                raise _error(
                    "reserved_env",
                    f"{secret.name} is set by the controller",
                    "choose another name",
                    path=f"secrets[{i}].name",
                )
            seen.add(secret.name)
        for key in self.env:
            if key in seen:
                raise _error(
                    "env_conflict",
                    f"{key} is both a secret and a plain env variable",
                    "keep it only in secrets",
                    path=f"env.{key}",
                )
        tokens: set[str] = set()
        for path, var in self.config.placeholder_uses():
            _check_placeholder(path, var, secrets=seen, env=self.env)
            if len(path) == 2 and (path[0], path[1]) in TOKEN_FIELDS:
                tokens.add(var)
        for i, name in enumerate(self.config.agent.inherit_env):
            if name in tokens:
                raise _error(
                    "token_inherited",
                    f"{name} holds a token of a token field and may not be passed to the agent",
                    "the agent runs arbitrary tools: remove it from inherit_env (give the agent "
                    "its own secret if it needs a credential)",
                    path=f"config.agent.inherit_env[{i}]",
                )
        return self

    def effective_ecs(self) -> EffectiveEcs:
        """Capacity provider, roles and networking with ``platform.ecs`` winning."""
        ecs = self.platform.ecs if self.platform and self.platform.ecs else EcsPlatform()
        return EffectiveEcs(
            capacity_provider=ecs.capacity_provider or self.capacity_provider,
            execution_role=ecs.execution_role,
            task_role=ecs.task_role,
            networking=ecs.networking or self.networking,
        )

    def container_env_names(self) -> list[str]:
        """Names of every variable the container gets from the manifest (secrets, then env)."""
        return [s.name for s in self.secrets] + list(self.env)

    def config_toml_dict(self) -> dict[str, Any]:
        """``config.toml`` content for this agent (``OpenABConfig.to_toml_dict``)."""
        return self.config.to_toml_dict(self.container_env_names())


#: Characters a plain value substituted into config.toml's text may not hold: they would end the
#: TOML string and rewrite the file (OpenAB substitutes before parsing).
_TOML_UNSAFE: Final = {'"': "a double quote", "\\": "a backslash"}


def _toml_unsafe(value: str) -> str | None:
    """What in ``value`` would change config.toml if substituted into one of its strings."""
    for char in value:
        if char in _TOML_UNSAFE:
            return _TOML_UNSAFE[char]
        if char in "\n\r":
            return "a line break"
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return "a control character"
    return None


def _check_placeholder(
    path: tuple[str | int, ...], var: str, *, secrets: set[str], env: Mapping[str, str]
) -> None:
    """Rules for one ``${VAR}`` of spec.config (see README, "Security model")."""
    where = "config" + _render_path(path)
    token_field = len(path) == 2 and (path[0], path[1]) in TOKEN_FIELDS
    if var in secrets:
        if not token_field:
            raise _error(
                "secret_placeholder",
                f"${{{var}}} is a secret (spec.secrets) and may appear only in a token field; "
                f"OpenAB would substitute its value into {where}, where it is printed or "
                "passed on",
                "remove the placeholder: a secret the agent CLI needs reaches it through "
                "[agent].inherit_env, which is added for you (token fields: "
                + ", ".join(sorted(".".join(f) for f in TOKEN_FIELDS))
                + ")",
                path=where,
            )
        return
    if var not in env:
        raise _error(
            "missing_secret",
            f"${{{var}}} is not provided",
            f"add a secret named {var} to spec.secrets (e.g. source: ssm, path: "
            f"/oab/NAMESPACE/NAME/...) or declare it in spec.env",
            path=where,
        )
    if token_field:
        raise _error(
            "token_from_env",
            f"{where} refers to ${{{var}}}, a plain spec.env value; a token must come from "
            "spec.secrets",
            f"store the token in SSM or Secrets Manager, declare it in spec.secrets as {var} "
            "and remove it from spec.env",
            path=where,
        )
    unsafe = _toml_unsafe(env[var])
    if unsafe is not None:
        raise _error(
            "toml_unsafe",
            f"{var} is substituted into config.toml (at {where}) and its value contains {unsafe}",
            "OpenAB substitutes ${VAR} into the file's text before parsing it, so quotes, "
            "backslashes, line breaks and control characters would rewrite config.toml: "
            "remove them from the value",
            path=f"env.{var}",
        )


def _describe(values: Sequence[int]) -> str:
    if len(values) <= 3:
        return ", ".join(str(v) for v in values)
    step = values[1] - values[0]
    return f"{values[0]}..{values[-1]} in steps of {step}"


def _render_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


#: The phases of an agent (the machine that moves between them: :mod:`oab.controller.core.status`).
Phase = Literal["Pending", "Running", "Failed", "Terminating"]
#: The value of a condition's ``status``.
ConditionStatus = Literal["True", "False", "Unknown"]


# The schema of what ``oab.controller.core.status.Condition.to_json`` stores and shows (a test
# keeps the two in step); the docstring is the JSON Schema's description, so it stays short.
class Condition(_Model):
    """One status condition (Kubernetes conventions)."""

    type: StrictStr
    status: ConditionStatus
    reason: StrictStr | None = None
    message: StrictStr | None = None
    last_transition_time: datetime | None = None


class ServiceStatus(_Model):
    """``status``: what the controller last observed (written by the controller only)."""

    phase: Phase | None = None
    observed_generation: StrictInt | None = Field(default=None, ge=0, le=MAX_GENERATION)
    task_arns: list[StrictStr] = Field(default_factory=list)
    last_reconciled: datetime | None = None
    conditions: list[Condition] = Field(default_factory=list)
    task_definition_arn: StrictStr | None = None
    service_arn: StrictStr | None = None
    rollout_state: StrictStr | None = None
    running_count: StrictInt | None = Field(default=None, ge=0, le=MAX_COUNT)
    pending_count: StrictInt | None = Field(default=None, ge=0, le=MAX_COUNT)
    message: StrictStr | None = None


class OABService(_Model):
    """One OpenAB agent run as one ECS service."""

    api_version: Literal["oab.dev/v1"] = API_VERSION
    kind: Literal["OABService"] = "OABService"
    metadata: ObjectMeta
    spec: OABServiceSpec
    status: ServiceStatus | None = None

    @property
    def key(self) -> AgentKey:
        """``namespace/name``."""
        return AgentKey(f"{self.metadata.namespace}/{self.metadata.name}")

    def spec_digest(self) -> str:
        """sha256 (hex) of the spec's canonical JSON: equal digests mean no generation bump."""
        return _digest(self.spec.model_dump(mode="json", by_alias=True))

    def to_manifest(self) -> dict[str, Any]:
        """The object as manifest data (camelCase, no unset optional fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _digest(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Fleets


class FleetDefaults(_Model):
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


class FleetAgent(_Model):
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


class FleetSpec(_Model):
    """``spec`` of an OABFleet."""

    defaults: FleetDefaults = Field(default_factory=FleetDefaults)
    agents: list[FleetAgent] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_agent_names(self) -> FleetSpec:
        seen: set[str] = set()
        for i, agent in enumerate(self.agents):
            if agent.name in seen:
                raise _error(
                    "duplicate_agent",
                    f"agent {agent.name} appears twice",
                    "agent names are unique within a fleet",
                    path=f"agents[{i}].name",
                )
            if agent.image is not None and agent.task_definition is not None:
                raise _error(
                    "image_conflict",
                    "both image and taskDefinition are set",
                    "write only one of them",
                    path=f"agents[{i}].image",
                )
            seen.add(agent.name)
        return self


class OABFleet(_Model):
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
        return _digest(self.spec.model_dump(mode="json", by_alias=True))

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
    labels = {**fleet.metadata.labels, **agent.labels, FLEET_LABEL: fleet.metadata.name}
    return {
        "apiVersion": API_VERSION,
        "kind": "OABService",
        "metadata": {"name": agent.name, "namespace": ns, "labels": labels},
        "spec": spec,
    }


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

    Per agent: cpu, memory, image/taskDefinition, bootstrapFrom, networking, capacityProvider
    override the defaults; env and secrets merge by name (the agent wins); platform and config
    deep-merge (mappings key by key, lists replaced). By convention, a Discord agent whose
    ``bot_token`` placeholder has no provider gets it from SSM
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


# ---------------------------------------------------------------------------------------------
# Errors and the document entry point


@dataclass(frozen=True)
class FieldIssue:
    """One validation problem: where (field path), what, and how to fix it."""

    path: tuple[str | int, ...]
    message: str
    hint: str | None = None

    @property
    def dotted(self) -> str:
        """``spec.config.discord.allowed_channels[0]``."""
        out = ""
        for part in self.path:
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += f".{part}" if out else str(part)
        return out or "(document)"

    def __str__(self) -> str:
        text = f"{self.dotted}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text


@dataclass
class InvalidDocument(ValueError):
    """A document failed validation; ``issues`` lists every problem found. Not retryable."""

    issues: list[FieldIssue] = field(default_factory=list)
    retryable: bool = False

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


def parse_document(data: object) -> OABService | OABFleet:
    """Validate one manifest document (already parsed from YAML) into an API object.

    Fleets are validated through their expansion too, so a returned fleet always expands.
    Raises ``InvalidDocument``.
    """
    if not isinstance(data, Mapping):
        raise InvalidDocument(
            [FieldIssue((), f"a manifest must be a mapping, got {_type_name(data)}")]
        )
    api_version = data.get("apiVersion", data.get("api_version"))
    if api_version != API_VERSION:
        raise InvalidDocument(
            [
                FieldIssue(
                    ("apiVersion",),
                    "missing" if api_version is None else f"unknown apiVersion {api_version!r}",
                    f"write apiVersion: {API_VERSION}",
                )
            ]
        )
    kind = data.get("kind")
    model: type[OABService] | type[OABFleet]
    if kind == "OABService":
        model = OABService
    elif kind == "OABFleet":
        model = OABFleet
    else:
        raise InvalidDocument(
            [
                FieldIssue(
                    ("kind",),
                    "missing" if kind is None else f"unknown kind {kind!r}",
                    "write kind: OABService or kind: OABFleet",
                )
            ]
        )
    literals = secret_literal_issues(data)
    try:
        obj = model.model_validate(dict(data))
    except ValidationError as exc:
        # A field holding a secret-shaped literal is reported once, as that (a token field would
        # also say "not a placeholder").
        flagged = {issue.path for issue in literals}
        issues = [i for i in issues_from_validation_error(exc, data) if i.path not in flagged]
        raise InvalidDocument(literals + issues) from exc
    if literals:
        raise InvalidDocument(literals)
    if isinstance(obj, OABFleet):
        expand_fleet(obj)
    return obj


_LITERAL_HINT = (
    "secrets never go in a manifest: store the value in SSM Parameter Store or Secrets Manager "
    "under /oab/NAMESPACE/NAME/ (oab/NAMESPACE/NAME/ for Secrets Manager), declare it in "
    "spec.secrets and refer to it as ${NAME}"
)


def secret_literal_issues(data: Mapping[Any, Any]) -> list[FieldIssue]:
    """An issue for every string (value or key) of a document that looks like a credential.

    Shapes come from :func:`oab.controller.base.redact.secret_kind` (the one list of them); an issue
    names the field path and the shape, never the value. A key that looks like a credential is
    reported at its parent's path, since the key itself would be part of the path. ``status``
    (written by the controller) is skipped. Iterative, so depth is never a recursion problem.
    """
    issues: list[FieldIssue] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [
        ((key if isinstance(key, str | int) else str(key),), value)
        for key, value in reversed(list(data.items()))
        if key != "status"
    ]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            kind = secret_kind(value)
            if kind is not None:
                issues.append(FieldIssue(path, f"holds what looks like {kind}", _LITERAL_HINT))
        elif isinstance(value, Mapping):
            for key, item in reversed(list(value.items())):
                if isinstance(key, str) and (kind := secret_kind(key)) is not None:
                    issues.append(FieldIssue(path, f"a key looks like {kind}", _LITERAL_HINT))
                    continue
                stack.append(((*path, key if isinstance(key, str | int) else str(key)), item))
        elif isinstance(value, list):
            stack.extend(((*path, i), item) for i, item in reversed(list(enumerate(value))))
    return issues


def _type_name(value: object) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


_HINTS: dict[str, str] = {
    "missing": "add this field",
    "extra_forbidden": "remove it or check its spelling",
    "int_type": "write a whole number",
    "bool_type": "write true or false",
    "string_type": "write a string (quote it)",
    "list_type": "write a list",
    "dict_type": "write a mapping",
    "model_type": "write a mapping",
    "model_attributes_type": "write a mapping",
    "datetime_from_date_parsing": "write an ISO 8601 timestamp, e.g. 2026-01-31T12:00:00Z",
    "datetime_parsing": "write an ISO 8601 timestamp, e.g. 2026-01-31T12:00:00Z",
    "datetime_type": "write an ISO 8601 timestamp, e.g. 2026-01-31T12:00:00Z",
}


def issues_from_validation_error(exc: ValidationError, data: object) -> list[FieldIssue]:
    """Turn pydantic's errors into ``FieldIssue``s whose paths match the document's keys.

    pydantic's locations use aliases and include union tags (``secrets.0.ssm.path``); they are
    re-walked against ``data`` so that the path names keys as the user wrote them.
    """
    issues: list[FieldIssue] = []
    seen: set[tuple[tuple[str | int, ...], str]] = set()
    for err in exc.errors(include_input=False, include_url=False):
        ctx = err.get("ctx") or {}
        loc = _clean_loc(tuple(err["loc"]), data)
        extra = ctx.get("path")
        if extra:
            loc = loc + _parse_path(str(extra))
        message = str(ctx.get("text") or err["msg"])
        hint = ctx.get("hint") or _HINTS.get(err["type"])
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "union_tag_invalid":
            message = "source must be ssm or secretsmanager"
            hint = "write source: ssm (with path) or source: secretsmanager (with arn)"
        elif err["type"] == "union_tag_not_found":
            message = "secret needs a source"
            hint = "write source: ssm (with path) or source: secretsmanager (with arn)"
        key = (loc, message)
        if key in seen:
            continue
        seen.add(key)
        issues.append(FieldIssue(loc, message, str(hint) if hint else None))
    return issues


def parse_field_path(text: str) -> tuple[str | int, ...]:
    """``spec.secrets[0].path`` -> ``("spec", "secrets", 0, "path")`` (the inverse of dotted)."""
    return _parse_path(text)


def _parse_path(text: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", text):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return tuple(parts)


def _clean_loc(loc: tuple[str | int, ...], data: object) -> tuple[str | int, ...]:
    out: list[str | int] = []
    current: object = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, Mapping):
            key = _find_key(current, part)
            if key is not None:
                out.append(key)
                current = current[key]
                continue
            if last:
                out.append(part)
                break
            # Not a key of the input: a union tag or a validator label; skip it.
            continue
        if isinstance(current, list) and isinstance(part, int):
            out.append(part)
            current = current[part] if 0 <= part < len(current) else None
            continue
        if last or current is None:
            out.append(part)
            current = None
            continue
    return tuple(out)


def _find_key(mapping: Mapping[Any, Any], part: str | int) -> Any:
    if part in mapping:
        return part
    if isinstance(part, str):
        for candidate in (_to_snake(part), to_camel(part)):
            if candidate in mapping:
                return candidate
    return None


def _to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
