"""The ``oab.dev/v1`` API: ``OABService``, its spec, metadata and status schema (pydantic v2).

``OABFleet`` (several agents from one manifest) is :mod:`oab.controller.api.fleet`; the field
issues every validation error becomes, :mod:`oab.controller.api.issues`; the entry point that
picks the model of a document, :func:`oab.controller.api.document.parse_document`.

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
    ``parse_document`` raises ``InvalidDocument`` carrying ``FieldIssue`` s (field path, message,
    hint). Validators attach a sub-path in the error context (``ctx["path"]``) when a rule spans
    fields, so the issue points at the offending field, not at the enclosing object.

Time model
    The API holds wall-clock timestamps only as stored/shown values (creation, deletion,
    lastReconciled, lastTransitionTime); nothing here reads a clock.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from oab.controller.api.ingress import IngressSpec
from oab.controller.api.openab import TOKEN_FIELDS, OpenABConfig, wire_conventional_tokens
from oab.controller.api.schedule import Schedules
from oab.controller.base.names import API_VERSION
from oab.controller.base.taskcontract import RESERVED_ENV

__all__ = [
    "CONFIG_TOML_MAX_CHARS",
    "FARGATE_MEMORY",
    "MAX_COUNT",
    "MAX_GENERATION",
    "AgentKey",
    "ApiModel",
    "CapacityProvider",
    "ConditionStatus",
    "DnsLabel",
    "EcsPlatform",
    "EffectiveEcs",
    "Networking",
    "OABService",
    "OABServiceSpec",
    "ObjectMeta",
    "Phase",
    "Platform",
    "SecretRef",
    "SecretsManagerSecret",
    "ServiceStatus",
    "SsmSecret",
    "StatusCondition",
    "TaskDefinitionSpec",
    "api_error",
    "canonical_digest",
    "ecs_name_rivals",
    "is_dns_label",
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


def api_error(kind: str, message: str, hint: str | None = None, *, path: str = "") -> Exception:
    """A validation error of kind ``kind`` whose context carries the ``hint`` (what to write
    instead) and, for rules that span fields, the sub-``path`` the issue should point at."""
    ctx: dict[str, Any] = {"text": message}
    if hint:
        ctx["hint"] = hint
    if path:
        ctx["path"] = path
    return PydanticCustomError(kind, "{text}", ctx)


def _pattern(regex: re.Pattern[str], what: str, hint: str) -> AfterValidator:
    def check(value: str) -> str:
        if regex.fullmatch(value) is None:
            raise api_error("format", f"{value!r} is not {what}", hint)
        return value

    return AfterValidator(check)


def _dns_label(value: str) -> str:
    if not is_dns_label(value):
        raise api_error(
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


class ApiModel(BaseModel):
    """Base of every API object: camelCase in YAML, snake_case in Python, unknown keys refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        hide_input_in_errors=True,
    )


class ObjectMeta(ApiModel):
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


class SsmSecret(ApiModel):
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
        raise api_error(
            "format",
            f"{value!r} is not an SSM parameter name or ARN",
            "write /oab/NAMESPACE/NAME/discord-token or "
            "arn:aws:ssm:REGION:ACCOUNT:parameter/oab/...",
        )
    return value


class SecretsManagerSecret(ApiModel):
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


class Networking(ApiModel):
    """awsvpc networking of the task."""

    subnets: list[
        Annotated[StrictStr, _pattern(_SUBNET_RE, "a subnet id", "write subnet-0123abcd...")]
    ] = Field(min_length=1)
    security_groups: list[
        Annotated[StrictStr, _pattern(_SG_RE, "a security group id", "write sg-0123abcd...")]
    ] = Field(default_factory=list)
    assign_public_ip: StrictBool = False


class TaskDefinitionSpec(ApiModel):
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


class EcsPlatform(ApiModel):
    """``spec.platform.ecs``: ECS-specific settings; override the top-level forms."""

    capacity_provider: CapacityProvider | None = None
    architecture: Literal["X86_64", "ARM64"] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,  # absent: stored specs and digests as before the field
        description="runtimePlatform.cpuArchitecture of this agent's task (default: the "
        "platform's setting); the image must match.",
    )
    execution_role: RoleRef | None = None
    task_role: RoleRef | None = None
    networking: Networking | None = None


class Platform(ApiModel):
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
        raise api_error(
            "replicas",
            f"replicas: {_shown(value)} is not supported; only 1 is valid",
            "one bot token holds one connection: scale out with more agents (an OABFleet), "
            "each with its own token",
        )
    return value


def _fargate_cpu(value: int) -> int:
    if value not in FARGATE_MEMORY:
        raise api_error(
            "fargate_cpu",
            f"{_shown(value)} is not a Fargate CPU value",
            "use one of " + ", ".join(str(c) for c in FARGATE_MEMORY),
        )
    return value


def _s3_uri(value: str) -> str:
    if _S3_URI_RE.fullmatch(value) is None:
        raise api_error(
            "format",
            f"{value!r} is not an s3:// URI",
            "write s3://BUCKET/KEY.tar.gz (an archive of agent state; never secrets or "
            "config.toml)",
        )
    return value


#: Largest ``spec.configToml`` (characters): OpenAB reads at most 1 MiB of config, and the text
#: is stored inside the manifest object (1 MiB cap with metadata), so leave room for the rest.
CONFIG_TOML_MAX_CHARS: Final = 256 * 1024


def _config_s3_uri(value: str) -> str:
    if _S3_URI_RE.fullmatch(value) is None:
        raise api_error(
            "format",
            f"{value!r} is not an s3:// URI",
            "write s3://BUCKET/KEY/config.toml (a local file is read by oabctl apply instead)",
        )
    return value


def _env_names(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if _ENV_NAME_RE.fullmatch(key) is None:
            raise api_error(
                "env_name",
                f"{key!r} is not an environment variable name",
                "use uppercase letters, digits and '_', not starting with a digit",
                path=key,
            )
        if key in RESERVED_ENV:
            raise api_error(
                "reserved_env",
                f"{key} is set by the controller",
                "remove it: the controller pins " + " and ".join(sorted(RESERVED_ENV)),
                path=key,
            )
    return value


class OABServiceSpec(ApiModel):
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
    config: OpenABConfig | None = None
    config_toml: Annotated[StrictStr, Field(max_length=CONFIG_TOML_MAX_CHARS)] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="config.toml text delivered verbatim (what an oab.dev/v2 configFrom file "
        "becomes); checked, never rewritten. Exactly one of config, configToml, configFrom.",
    )
    config_from: Annotated[StrictStr, AfterValidator(_config_s3_uri)] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="s3:// URL of a config.toml the controller reads at every reconcile and "
        "delivers verbatim; a new object version rolls the agent out.",
    )
    platform: Platform | None = None
    # Left out of dumps while unset, like ``exec``: the spec digest of every agent without
    # ingress is what it was before the field existed (no generation bump on upgrade).
    ingress: IngressSpec | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Inbound webhook ingress (API Gateway HTTP API -> VPC Link -> Cloud Map).",
    )
    # Left out of dumps while off, so the spec digest (and the stored manifest) of every agent
    # that does not use exec is what it was before the field existed: no generation bump.
    exec: StrictBool = Field(
        default=False,
        exclude_if=lambda on: on is False,
        description=(
            "ECS Exec for `oabctl exec` / `oabctl cp` (enableExecuteCommand; the task role needs "
            "the four ssmmessages channel actions). Changing it restarts the agent's task."
        ),
    )

    # Desired count 0 while true; schedules set it level-wise (oab.controller.core.schedule).
    # ``None`` (absent) means false / none, left out of dumps so manifests and spec digests
    # without them stay byte-identical.
    suspend: StrictBool | None = Field(default=None, exclude_if=lambda v: v is None)
    schedules: Schedules | None = Field(default=None, exclude_if=lambda v: v is None)

    @model_validator(mode="before")
    @classmethod
    def _wire_tokens(cls, data: Any) -> Any:
        # A declared conventional secret (DISCORD_BOT_TOKEN...) fills its platform's missing
        # token field, as fleets do (openab.wire_conventional_tokens).
        if isinstance(data, dict) and "config" in data and isinstance(data.get("secrets"), list):
            names = [s.get("name") for s in data["secrets"] if isinstance(s, dict)]
            declared = [n for n in names if isinstance(n, str)]
            data = {**data, "config": wire_conventional_tokens(data.get("config"), declared)}
        return data

    @model_validator(mode="after")
    def _one_config_source(self) -> OABServiceSpec:
        given = [
            n
            for n, v in (
                ("config", self.config),
                ("configToml", self.config_toml),
                ("configFrom", self.config_from),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise api_error(
                "config_source",
                "missing: give the agent's config"
                if not given
                else f"{' and '.join(given)} are both set",
                "write exactly one of config (OpenAB's config.toml as YAML), configToml (its "
                "text) or configFrom (an s3:// URL of it)",
                path=given[-1] if given else "config",
            )
        return self

    @model_validator(mode="after")
    def _cross_field_rules(self) -> OABServiceSpec:
        allowed = FARGATE_MEMORY.get(self.cpu)
        if allowed is not None and self.memory not in allowed:
            raise api_error(
                "fargate_memory",
                f"{_shown(self.memory)} is not a valid Fargate memory size for cpu {self.cpu}",
                f"with cpu {self.cpu} use memory {_describe(allowed)}",
                path="memory",
            )
        seen = self._variable_names()
        if self.config is not None:  # configToml/configFrom: checked as a file (api/v2.py)
            self._check_placeholders(self.config, secrets=seen)
        return self

    def _variable_names(self) -> set[str]:
        """The secrets' names, each declared once, none reserved, none also in ``env``."""
        seen: set[str] = set()
        for i, secret in enumerate(self.secrets):
            if secret.name in seen:
                raise api_error(
                    "duplicate_secret",
                    f"secret {secret.name} is declared twice",
                    "each secret name is one container variable: keep one entry",
                    path=f"secrets[{i}].name",
                )
            if secret.name in RESERVED_ENV:
                raise api_error(
                    "reserved_env",
                    f"{secret.name} is set by the controller",
                    "choose another name",
                    path=f"secrets[{i}].name",
                )
            seen.add(secret.name)
        for key in self.env:
            if key in seen:
                raise api_error(
                    "env_conflict",
                    f"{key} is both a secret and a plain env variable",
                    "keep it only in secrets",
                    path=f"env.{key}",
                )
        return seen

    def _check_placeholders(self, config: OpenABConfig, *, secrets: set[str]) -> None:
        """Every placeholder is backed by a secret or env variable, and no token of a token
        field is passed on to the agent through ``inherit_env``."""
        tokens: set[str] = set()
        for path, var in config.placeholder_uses():
            _check_placeholder(path, var, secrets=secrets, env=self.env)
            if len(path) == 2 and (path[0], path[1]) in TOKEN_FIELDS:
                tokens.add(var)
        for i, name in enumerate(config.agent.inherit_env):
            if name in tokens:
                raise api_error(
                    "token_inherited",
                    f"{name} holds a token of a token field and may not be passed to the agent",
                    "the agent runs arbitrary tools: remove it from inherit_env (give the agent "
                    "its own secret if it needs a credential)",
                    path=f"config.agent.inherit_env[{i}]",
                )

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
        """``config.toml`` content for this agent (``OpenABConfig.to_toml_dict``); only for a
        ``spec.config`` agent (a ``configToml`` one is delivered as its text)."""
        if self.config is None:
            raise ValueError("this agent's config.toml is text (configToml/configFrom)")
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
            raise api_error(
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
        raise api_error(
            "missing_secret",
            f"${{{var}}} is not provided",
            f"add a secret named {var} to spec.secrets (e.g. source: ssm, path: "
            f"/oab/NAMESPACE/NAME/...) or declare it in spec.env",
            path=where,
        )
    if token_field:
        raise api_error(
            "token_from_env",
            f"{where} refers to ${{{var}}}, a plain spec.env value; a token must come from "
            "spec.secrets",
            f"store the token in SSM or Secrets Manager, declare it in spec.secrets as {var} "
            "and remove it from spec.env",
            path=where,
        )
    unsafe = _toml_unsafe(env[var])
    if unsafe is not None:
        raise api_error(
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
Phase = Literal["Pending", "Running", "Suspended", "Failed", "Terminating"]
#: The value of a condition's ``status``.
ConditionStatus = Literal["True", "False", "Unknown"]


# The schema of what ``oab.controller.core.status.Condition.to_json`` stores and shows (a test
# keeps the two in step); the docstring is the JSON Schema's description, so it stays short. Its
# own name, so that ``Condition`` means the status model's one type (core/status.py).
class StatusCondition(ApiModel):
    """One status condition (Kubernetes conventions)."""

    type: StrictStr
    status: ConditionStatus
    reason: StrictStr | None = None
    message: StrictStr | None = None
    last_transition_time: datetime | None = None


class ServiceStatus(ApiModel):
    """``status``: what the controller last observed (written by the controller only)."""

    phase: Phase | None = None
    observed_generation: StrictInt | None = Field(default=None, ge=0, le=MAX_GENERATION)
    task_arns: list[StrictStr] = Field(default_factory=list)
    last_reconciled: datetime | None = None
    conditions: list[StatusCondition] = Field(default_factory=list)
    task_definition_arn: StrictStr | None = None
    service_arn: StrictStr | None = None
    rollout_state: StrictStr | None = None
    running_count: StrictInt | None = Field(default=None, ge=0, le=MAX_COUNT)
    pending_count: StrictInt | None = Field(default=None, ge=0, le=MAX_COUNT)
    message: StrictStr | None = None


class OABService(ApiModel):
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
        return canonical_digest(self.spec.model_dump(mode="json", by_alias=True))

    def to_manifest(self) -> dict[str, Any]:
        """The object as manifest data (camelCase, no unset optional fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def canonical_digest(data: Any) -> str:
    """sha256 (hex) of ``data``'s canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
