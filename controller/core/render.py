"""Pure renderers: an ``OABService`` to its ``config.toml`` and its ECS request bodies.

Design
    Everything here is a pure function of ``(OABService, RenderContext)``: no AWS calls, no clock,
    no randomness, so ``oabctl render`` prints exactly what the controller would send, and golden
    files pin the output byte for byte (``tests/test_render.py``). The reconcile loop calls
    ``render_config_toml`` / ``render_task_definition`` / ``render_create_service`` /
    ``render_update_service`` and passes the dicts to boto3 unchanged (``client.x(**request)``).

    One agent is one ECS service and one task definition family, both ``oab-{ns}-{name}``
    (:func:`service_name`, :func:`family`). The task has three containers sharing one task volume,
    per the start-up contract of :mod:`oab.controller.base.taskcontract`: an init container
    (controller image) fetches this generation's ``config.toml`` artifact and the bootstrap archive;
    a snapshot sidecar (controller image) uploads HOME archives; the ``openab`` container (the stock
    image) runs the agent's entry script and gets the secrets. The agent container depends on the
    init container's ``SUCCESS`` (so a failed fetch fails the task and the circuit breaker keeps the
    previous one) and on the sidecar's ``START`` (so ECS stops the agent first on shutdown and the
    sidecar is still there to upload the final archive).

Invariants
    - Output is deterministic: environment, secrets, tags, dependencies, subnets and security
      groups are sorted by name; containers come in the fixed order init, sidecar, agent.
    - Secrets reach ECS only as references (``{name, valueFrom}``: an SSM parameter name or ARN,
      or a Secrets Manager ARN) and ``config.toml`` only as ``${VAR}`` placeholders; the renderer
      never sees a secret value.
    - ``CONFIG_ARTIFACT_PATH`` points at ``artifacts/{ns}/{name}/{gen}/{digest}/config.toml``,
      the write-once artifact of exactly this generation and rendering; the init container's
      ``CONFIG_SHA256`` is the sha256 of :func:`render_config_toml`'s text, so a changed
      artifact fails the task, and a different rendering of one generation (a controller
      upgrade) gets an object of its own instead of meeting the old bytes.
    - Rules real ECS enforces but the local emulator does not (``local-aws.md``) are checked here
      before anything is returned (:func:`check_task_definition`, :func:`check_service_request`):
      Fargate means ``awsvpc``; cpu/memory is a valid Fargate pair; an execution role exists
      whenever secrets or awslogs need one; a registration is at most 64 KiB as JSON; never a
      ``launchType`` together with a capacity provider strategy; at most one copy of a bot
      (``maximumPercent`` 100); client tokens of at most 36 printable ASCII characters.
    - :func:`task_definition_hash` covers everything of a registration except its tags, so two
      requests with the same hash register identical containers; the hash is also written as the
      ``oab.dev/content-hash`` tag so the controller can skip a registration ECS already holds.

Roles and the tenant boundary
    ``RenderContext.execution_role_arn`` / ``task_role_arn`` are templates formatted per agent
    with ``{account}``, ``{namespace}`` and ``{name}`` (IAM is per agent): the agent's *own*
    roles. The manifest's ``spec.platform.ecs.executionRole`` / ``taskRole`` may override them
    only with the own role of the same slot or a role on ``role_allowlist``; secrets must be the
    agent's own or on ``secret_allowlist``; ``bootstrapFrom`` may not point under a control-plane
    prefix (:mod:`oab.controller.core.tenancy`). A refusal is a :class:`RenderError` with reason
    ``PolicyViolation``: ``oabctl apply`` reports it (:func:`preflight`) and the controller parks
    the agent. Either role may be a full ARN or a bare name: a name becomes
    ``arn:{partition}:iam::{account}:role/NAME`` when the context knows the account, and is
    passed through unchanged otherwise (ECS accepts a short name for the task role; prefer ARNs
    or set ``account_id``). Role names longer than IAM's 64 characters (typically a long
    namespace and name in a template) are refused, as is a registration over ECS's 64 KiB.

Time model
    None: rendering reads no clock. The generation comes from the manifest (an unapplied manifest
    renders as generation 1, what its first apply stores).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, field_validator

from oab.controller.api.service import FARGATE_MEMORY, AgentKey, OABService, SsmSecret
from oab.controller.api.v2 import config_secret_refs
from oab.controller.base import names, taskcontract
from oab.controller.base.errors import TerminalError
from oab.controller.base.names import (
    CONTENT_HASH_TAG,
    GENERATION_TAG,
    MANAGED_BY,
    MANAGED_BY_TAG,
    NAME_TAG,
    NAMESPACE_TAG,
)
from oab.controller.core import tenancy

__all__ = [
    "POLICY_VIOLATION",
    "TASK_DEFINITION_MAX_BYTES",
    "RenderContext",
    "RenderError",
    "RenderedAgent",
    "artifact_key",
    "artifact_uri",
    "check_service_request",
    "check_task_definition",
    "example_client_token",
    "family",
    "preflight",
    "render_agent",
    "render_config_toml",
    "render_create_service",
    "render_task_definition",
    "render_update_service",
    "service_name",
    "task_definition_hash",
    "validate_request",
]

#: ECS caps ``clientToken`` at 36 ASCII characters in the range 33-126.
CLIENT_TOKEN_MAX: Final = 36

# Applied with ``fullmatch`` (``match`` with ``$`` would accept a trailing newline).
_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CLUSTER_RE = re.compile(
    r"[A-Za-z0-9_-]{1,255}|arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:cluster/[A-Za-z0-9_-]{1,255}"
)
_LOG_GROUP_RE = re.compile(r"[.\-_/#A-Za-z0-9]{1,512}")
_SUBNET_RE = re.compile(r"subnet-[0-9a-f]{8,17}")
_SG_RE = re.compile(r"sg-[0-9a-f]{8,17}")
_TEMPLATE_FIELDS = ("account", "namespace", "name")
_ROLE_NAME_CHARS = re.compile(r"[\w+=,.@-]+")


class RenderError(TerminalError):
    """The service cannot be rendered into a request ECS would accept. Not retryable.

    ``field`` names what is wrong: a manifest field path (``spec.platform.ecs.taskRole``,
    ``metadata.name``) when the manifest can fix it, else a request or context field. ``hint``
    says what to write instead. ``reason`` is ``RenderFailed``, or ``PolicyViolation`` when the
    manifest reaches outside its tenant boundary (:mod:`oab.controller.core.tenancy`).
    """

    reason = "RenderFailed"

    def __init__(
        self, message: str, *, field: str = "", hint: str | None = None, reason: str | None = None
    ) -> None:
        text = f"{field}: {message}" if field else message
        super().__init__(f"{text}; {hint}" if hint else text, reason=reason)
        self.field = field
        self.problem = message
        self.hint = hint


#: The reason of a :class:`RenderError` raised for a tenant-boundary refusal.
POLICY_VIOLATION: Final = "PolicyViolation"
#: ECS refuses a ``RegisterTaskDefinition`` request larger than this (bytes of its JSON).
TASK_DEFINITION_MAX_BYTES: Final = 64 * 1024


def _policy_error(refusal: tenancy.Refusal, field: str) -> RenderError:
    return RenderError(refusal.message, field=field, hint=refusal.hint, reason=POLICY_VIOLATION)


class RenderContext(BaseModel):
    """Everything a rendering needs besides the manifest: where the agent runs and with what.

    Immutable and validated once at construction. Built by the composition root from the
    controller's/oabctl's settings.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str = Field(description="AWS region of the cluster; also the awslogs region.")
    bucket: str = Field(description="Control-plane bucket holding the config.toml artifacts.")
    cluster: str = Field(description="ECS cluster name or ARN the services run in.")
    agent_image: str = Field(
        min_length=1,
        description="Controller image containing `oab-agent` (init and sidecar containers).",
    )
    execution_role_arn: str = Field(
        min_length=1,
        description="Execution role (resolves secrets, pulls images, writes logs): ARN or name, "
        "may contain {account}, {namespace}, {name}. Overridden by platform.ecs.executionRole.",
    )
    task_role_arn: str = Field(
        min_length=1,
        description="Task role (reads the artifact and bootstrap archive, writes snapshots): ARN "
        "or name, same placeholders. Overridden by platform.ecs.taskRole.",
    )
    account_id: str | None = Field(
        default=None,
        pattern=r"^[0-9]{12}$",
        description="Account for {account} and for turning role names into ARNs; None = "
        "templates may not use {account} and role names pass through unchanged.",
    )
    log_group: str = Field(
        default=names.AGENT_LOG_GROUP,
        description="CloudWatch log group of every agent container.",
    )
    default_subnets: tuple[str, ...] = Field(
        default=(), description="awsvpc subnets for specs without networking (sorted on use)."
    )
    default_security_groups: tuple[str, ...] = Field(
        default=(),
        description="Security groups for specs without networking; empty = the "
        "VPC's default group.",
    )
    assign_public_ip: bool = Field(
        default=False,
        description="assignPublicIp for specs without networking. Default off: agents only "
        "need outbound traffic (through NAT); turn on for public subnets without NAT.",
    )
    cpu_architecture: Literal["X86_64", "ARM64"] = Field(
        default="X86_64", description="runtimePlatform.cpuArchitecture; images must match."
    )
    role_allowlist: tuple[str, ...] = Field(
        default=(),
        description="ARN globs of roles any agent may name in platform.ecs.executionRole/taskRole "
        "besides its own (see oab.controller.core.tenancy); empty = only its own.",
    )
    secret_allowlist: tuple[str, ...] = Field(
        default=(),
        description="ARN globs of secrets any agent may reference besides its own paths.",
    )
    account_known: bool = Field(
        default=True,
        description="False when account_id is a stand-in (oabctl without the account setting): "
        "ARNs are then rendered with it but their account is not compared by the tenant checks.",
    )

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if _REGION_RE.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not an AWS region (e.g. eu-west-1)")
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if _BUCKET_RE.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not an S3 bucket name")
        return value

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        if _CLUSTER_RE.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not an ECS cluster name or ARN")
        return value

    @field_validator("log_group")
    @classmethod
    def _log_group(cls, value: str) -> str:
        if _LOG_GROUP_RE.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a CloudWatch log group name")
        return value

    @field_validator("execution_role_arn", "task_role_arn")
    @classmethod
    def _role_template(cls, value: str) -> str:
        try:
            value.format(**dict.fromkeys(_TEMPLATE_FIELDS, "x"))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                "only {account}, {namespace} and {name} may appear in a role template"
            ) from exc
        return value

    @field_validator("role_allowlist")
    @classmethod
    def _role_allowlist(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tenancy.check_allowlist("role", value)

    @field_validator("secret_allowlist")
    @classmethod
    def _secret_allowlist(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tenancy.check_allowlist("secret", value)

    @field_validator("default_subnets")
    @classmethod
    def _subnets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if _SUBNET_RE.fullmatch(item) is None:
                raise ValueError(f"{item!r} is not a subnet id")
        return value

    @field_validator("default_security_groups")
    @classmethod
    def _security_groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if _SG_RE.fullmatch(item) is None:
                raise ValueError(f"{item!r} is not a security group id")
        return value

    @property
    def partition(self) -> str:
        """The ARN partition of :attr:`region`."""
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    @property
    def policy(self) -> tenancy.TenantPolicy:
        """The tenant boundary these settings draw (:mod:`oab.controller.core.tenancy`)."""
        return tenancy.TenantPolicy(
            partition=self.partition,
            region=self.region,
            account=self.account_id if self.account_known else None,
            bucket=self.bucket,
            role_allowlist=self.role_allowlist,
            secret_allowlist=self.secret_allowlist,
        )


# ---------------------------------------------------------------------------------------------
# Naming


def service_name(namespace: str, name: str) -> str:
    """ECS service name of an agent: ``oab-{namespace}-{name}`` (:func:`names.ecs_name`)."""
    return names.ecs_name(namespace, name)


def family(namespace: str, name: str) -> str:
    """Task definition family of an agent (the same string as its service name)."""
    return service_name(namespace, name)


def _generation(svc: OABService) -> int:
    return svc.metadata.generation or 1


def artifact_key(svc: OABService) -> str:
    """S3 key of this generation's write-once ``config.toml`` in the control-plane bucket.

    The key holds the first 16 hex digits of the config's sha256 besides the generation: the
    object is write-once, so a controller upgrade that renders the same generation differently
    must write a new object rather than find the old bytes (which the init container would
    refuse against the new ``CONFIG_SHA256``).
    """
    meta = svc.metadata
    digest = taskcontract.config_sha256(render_config_toml(svc))[:16]
    return names.artifact_key(meta.namespace, meta.name, generation=_generation(svc), digest=digest)


def artifact_uri(ctx: RenderContext, svc: OABService) -> str:
    """``s3://`` URI of :func:`artifact_key` (the value of ``CONFIG_ARTIFACT_PATH``)."""
    return f"s3://{ctx.bucket}/{artifact_key(svc)}"


def example_client_token(svc: OABService) -> str:
    """A deterministic ``clientToken`` for previews: one per agent and generation (32 hex)."""
    seed = f"{svc.key}@{_generation(svc)}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# config.toml


def render_config_toml(svc: OABService) -> str:
    """``spec.config`` as OpenAB's ``config.toml`` text.

    Secrets appear only as ``${VAR}`` placeholders (the API refuses literal tokens); secret names
    the agent CLI needs are in ``[agent].inherit_env``. The text parses back (tomllib) to exactly
    ``svc.spec.config_toml_dict()``; a mismatch raises :class:`RenderError` rather than writing
    an artifact OpenAB would read differently.
    """
    spec = svc.spec
    if spec.config_toml is not None:
        # oab.dev/v2 configFrom (and spec.configToml): the user's file, byte for byte; it was
        # checked (oab.controller.api.v2), never rewritten.
        return spec.config_toml
    if spec.config is None:
        raise RenderError(
            "the config.toml at configFrom has not been read (it is read by the controller at "
            "each reconcile, and by oabctl apply/render)",
            field="spec.configFrom",
        )
    data = spec.config_toml_dict()
    text = tomli_w.dumps(data)
    if tomllib.loads(text) != data:
        raise RenderError("config.toml does not parse back to the same data", field="spec.config")
    return text


# ---------------------------------------------------------------------------------------------
# Task definition


def _format_role(template: str, ctx: RenderContext, svc: OABService, field: str) -> str:
    if "{account}" in template and ctx.account_id is None:
        raise RenderError(
            "the role template uses {account} but the render context has no account_id",
            field=field,
        )
    return template.format(
        account=ctx.account_id or "", namespace=svc.metadata.namespace, name=svc.metadata.name
    )


def _role_arn(value: str, ctx: RenderContext, field: str, *, template: str = "") -> str:
    """``value`` (an ARN or a bare name) as the role ARN to send, checking IAM's limits.

    ``template`` names the context template ``value`` came from (empty for a manifest value).
    """
    if value.startswith("arn:"):
        role = tenancy.parse_role_arn(value)
        if role is None:
            raise RenderError(f"{value!r} is not an IAM role ARN", field=field)
        name, path = role.name, role.path
    else:
        name, path = value, "/"
        if _ROLE_NAME_CHARS.fullmatch(value) is None:
            raise RenderError(f"{value!r} is not an IAM role name or ARN", field=field)
    if len(name) > tenancy.ROLE_NAME_MAX:
        setting = template.removesuffix("_arn")
        origin = f" (from the {setting} template)" if template else ""
        hint = (
            "shorten metadata.namespace and metadata.name together, or ask the platform team "
            f"for a shorter {setting} template"
            if template
            else "IAM role names are at most 64 characters: name a shorter role"
        )
        raise RenderError(
            f"IAM role name {name!r}{origin} is {len(name)} characters; IAM allows at most "
            f"{tenancy.ROLE_NAME_MAX}",
            field="metadata.name" if template else field,
            hint=hint,
        )
    if len(path) > tenancy.ROLE_PATH_MAX:
        raise RenderError(
            f"the IAM role path of {value!r} is longer than {tenancy.ROLE_PATH_MAX} characters",
            field=field,
        )
    if value.startswith("arn:") or ctx.account_id is None:
        return value
    return f"arn:{ctx.partition}:iam::{ctx.account_id}:role/{value}"


def _role(
    override: str | None,
    template: str,
    *,
    svc: OABService,
    ctx: RenderContext,
    setting: str,
    field: str,
    slot: str,
) -> str:
    own_text = _format_role(template, ctx, svc, setting)
    if override is None:
        return _role_arn(own_text, ctx, setting, template=setting)
    role = _role_arn(override, ctx, field)
    # The agent's own role (the template's) is resolved even when overridden: the override is
    # accepted only if it is that role or on the platform's allow-list (tenancy). An agent whose
    # template name exceeds IAM's limit has no own role in this slot, only allow-listed ones.
    try:
        own: str | None = _role_arn(own_text, ctx, setting, template=setting)
    except RenderError:
        own = None
    meta = svc.metadata
    refusal = ctx.policy.role_refusal(
        role, own=own, slot=slot, namespace=meta.namespace, name=meta.name
    )
    if refusal is not None:
        raise _policy_error(refusal, field)
    return role


def _roles(svc: OABService, ctx: RenderContext) -> tuple[str, str]:
    ecs = svc.spec.effective_ecs()
    execution = _role(
        ecs.execution_role,
        ctx.execution_role_arn,
        svc=svc,
        ctx=ctx,
        setting="execution_role_arn",
        field="spec.platform.ecs.executionRole",
        slot="execution",
    )
    task = _role(
        ecs.task_role,
        ctx.task_role_arn,
        svc=svc,
        ctx=ctx,
        setting="task_role_arn",
        field="spec.platform.ecs.taskRole",
        slot="task",
    )
    return execution, task


def _env(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": values[k]} for k in sorted(values)]


def _log_config(svc: OABService, ctx: RenderContext) -> dict[str, Any]:
    # Streams are named {prefix}/{container}/{task id}: one prefix per agent keeps
    # `oabctl logs NAME` a prefix filter on one shared group.
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": ctx.log_group,
            "awslogs-region": ctx.region,
            "awslogs-stream-prefix": f"{svc.metadata.namespace}/{svc.metadata.name}",
        },
    }


def _mount() -> list[dict[str, Any]]:
    return [
        {
            "sourceVolume": taskcontract.SHARED_VOLUME,
            "containerPath": taskcontract.SHARED_DIR,
            "readOnly": False,
        }
    ]


def _check_tenancy(svc: OABService, ctx: RenderContext) -> None:
    """Refuse secrets outside the agent's own paths, and a bootstrapFrom or configFrom in the
    control plane."""
    policy, meta, spec = ctx.policy, svc.metadata, svc.spec
    for i, secret in enumerate(spec.secrets):
        if isinstance(secret, SsmSecret):
            source, reference, key = "ssm", secret.path, "path"
        else:
            source, reference, key = "secretsmanager", secret.arn, "arn"
        refusal = policy.secret_refusal(
            source=source, reference=reference, namespace=meta.namespace, name=meta.name
        )
        if refusal is not None:
            raise _policy_error(refusal, f"spec.secrets[{i}].{key}")
    if spec.bootstrap_from is not None:
        refusal = policy.bootstrap_refusal(spec.bootstrap_from)
        if refusal is not None:
            raise _policy_error(refusal, "spec.bootstrapFrom")
    if spec.config_from is not None:
        refusal = tenancy.config_from_refusal(spec.config_from, control_plane_bucket=policy.bucket)
        if refusal is not None:
            raise _policy_error(refusal, "spec.configFrom")
    for key, ref in sorted(config_secret_refs(spec.config_toml or "").items()):
        refusal = policy.secret_ref_refusal(key, ref, namespace=meta.namespace, name=meta.name)
        if refusal is not None:
            raise _policy_error(refusal, "spec.configFrom")


def _secrets(svc: OABService) -> list[dict[str, str]]:
    # SSM: the parameter name (same region) or ARN as written; Secrets Manager: the ARN with its
    # optional :json-key:stage:version suffix. Only references: values are resolved by ECS.
    refs = {s.name: (s.path if isinstance(s, SsmSecret) else s.arn) for s in svc.spec.secrets}
    return [{"name": k, "valueFrom": refs[k]} for k in sorted(refs)]


def _containers(svc: OABService, ctx: RenderContext) -> list[dict[str, Any]]:
    spec, meta = svc.spec, svc.metadata
    log = _log_config(svc, ctx)
    identity = {
        taskcontract.ENV_BUCKET: ctx.bucket,
        taskcontract.ENV_NAMESPACE: meta.namespace,
        taskcontract.ENV_NAME: meta.name,
    }
    bootstrap = (
        {taskcontract.ENV_BOOTSTRAP_FROM: spec.bootstrap_from} if spec.bootstrap_from else {}
    )
    artifact = {taskcontract.ENV_CONFIG_ARTIFACT: artifact_uri(ctx, svc)}
    # The init container refuses an artifact whose bytes are not the ones rendered here.
    digest = {taskcontract.ENV_CONFIG_SHA256: taskcontract.config_sha256(render_config_toml(svc))}
    init = {
        "name": taskcontract.INIT_CONTAINER,
        "image": ctx.agent_image,
        "essential": False,
        "command": taskcontract.init_command(),
        "environment": _env({**identity, **artifact, **digest, **bootstrap}),
        "mountPoints": _mount(),
        "logConfiguration": log,
    }
    sidecar = {
        "name": taskcontract.SIDECAR_CONTAINER,
        "image": ctx.agent_image,
        "essential": False,
        "command": taskcontract.sidecar_command(),
        "environment": _env({**identity, **bootstrap}),
        "mountPoints": _mount(),
        "logConfiguration": log,
        # The sidecar is stopped after the agent and must still upload the final archive.
        "stopTimeout": taskcontract.SIDECAR_STOP_TIMEOUT,
    }
    entry = taskcontract.entry_command()
    main: dict[str, Any] = {
        "name": taskcontract.AGENT_CONTAINER,
        "image": spec.task_definition.image,
        "essential": True,
        "entryPoint": entry[:2],
        "command": entry[2:],
        "dependsOn": [
            {"containerName": taskcontract.INIT_CONTAINER, "condition": "SUCCESS"},
            {"containerName": taskcontract.SIDECAR_CONTAINER, "condition": "START"},
        ],
        # The artifact path and bootstrap location are informational here (the init container
        # already fetched both), but they make a running task self-describing.
        "environment": _env({**spec.env, **artifact, **bootstrap}),
        "mountPoints": _mount(),
        "logConfiguration": log,
        # Shorter than the sidecar's: the agent archives HOME, then the sidecar uploads it.
        "stopTimeout": taskcontract.AGENT_STOP_TIMEOUT,
    }
    secrets = _secrets(svc)
    if secrets:
        main["secrets"] = secrets
    if spec.ingress is not None:
        # Cloud Map SRV registration (awsvpc) needs the port in the container's mappings.
        main["portMappings"] = [{"containerPort": spec.ingress.container_port, "protocol": "tcp"}]
    return [init, sidecar, main]


def _tags(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": values[k]} for k in sorted(values)]


def _identity_tags(svc: OABService) -> dict[str, str]:
    return {
        NAMESPACE_TAG: svc.metadata.namespace,
        NAME_TAG: svc.metadata.name,
        MANAGED_BY_TAG: MANAGED_BY,
    }


def task_definition_hash(request: Mapping[str, Any]) -> str:
    """sha256 (hex) of a ``RegisterTaskDefinition`` request's canonical JSON, tags excluded.

    Equal hashes mean identical registrations apart from tags (which carry the hash itself and
    the generation), so the controller can skip re-registering what ECS already holds.
    """
    body = {k: v for k, v in request.items() if k != "tags"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _architecture(svc: OABService, ctx: RenderContext) -> str:
    ecs = svc.spec.platform.ecs if svc.spec.platform else None
    return ecs.architecture if ecs and ecs.architecture else ctx.cpu_architecture


def render_task_definition(svc: OABService, ctx: RenderContext) -> dict[str, Any]:
    """The exact ``RegisterTaskDefinition`` kwargs for this agent and generation.

    Raises :class:`RenderError` if a role cannot be resolved or a rule ECS enforces would fail.
    """
    spec, meta = svc.spec, svc.metadata
    _check_tenancy(svc, ctx)
    execution, task = _roles(svc, ctx)
    request: dict[str, Any] = {
        "family": family(meta.namespace, meta.name),
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": str(spec.cpu),
        "memory": str(spec.memory),
        "executionRoleArn": execution,
        "taskRoleArn": task,
        "runtimePlatform": {
            "cpuArchitecture": _architecture(svc, ctx),
            "operatingSystemFamily": "LINUX",
        },
        "volumes": [{"name": taskcontract.SHARED_VOLUME}],
        "containerDefinitions": _containers(svc, ctx),
    }
    tags = {
        **_identity_tags(svc),
        GENERATION_TAG: str(_generation(svc)),
        CONTENT_HASH_TAG: task_definition_hash(request),
    }
    request["tags"] = _tags(tags)
    check_task_definition(request)
    return request


def check_task_definition(request: Mapping[str, Any]) -> None:
    """Refuse a ``RegisterTaskDefinition`` request real ECS would reject but the emulator takes.

    Fargate needs ``awsvpc`` and a valid cpu/memory pair; ``secrets`` and the ``awslogs`` driver
    need an execution role; the request is at most :data:`TASK_DEFINITION_MAX_BYTES` as JSON.
    """
    size = len(json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode())
    if size > TASK_DEFINITION_MAX_BYTES:
        raise RenderError(
            f"the task definition is {size} bytes as JSON; ECS accepts at most "
            f"{TASK_DEFINITION_MAX_BYTES}",
            field="spec",
            hint="shorten spec.env values and the secret list (large data belongs in the "
            "bootstrap archive, not in the task definition)",
        )
    if "FARGATE" in request.get("requiresCompatibilities", []):
        if request.get("networkMode") != "awsvpc":
            raise RenderError("Fargate tasks need networkMode awsvpc", field="networkMode")
        try:
            cpu, memory = int(request["cpu"]), int(request["memory"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RenderError("Fargate tasks need task-level cpu and memory", field="cpu") from exc
        if memory not in FARGATE_MEMORY.get(cpu, ()):
            raise RenderError(f"cpu {cpu} / memory {memory} is not a Fargate size", field="memory")
    for i, container in enumerate(request.get("containerDefinitions", [])):
        needs = []
        if container.get("secrets"):
            needs.append("secrets")
        if container.get("logConfiguration", {}).get("logDriver") == "awslogs":
            needs.append("awslogs")
        if needs and not request.get("executionRoleArn"):
            raise RenderError(
                f"an execution role is required for {' and '.join(needs)}",
                field=f"containerDefinitions[{i}]",
            )


# ---------------------------------------------------------------------------------------------
# Services


def _network(svc: OABService, ctx: RenderContext) -> dict[str, Any]:
    networking = svc.spec.effective_ecs().networking
    if networking is not None:
        subnets, groups = list(networking.subnets), list(networking.security_groups)
        public = networking.assign_public_ip
    else:
        subnets, groups = list(ctx.default_subnets), list(ctx.default_security_groups)
        public = ctx.assign_public_ip
    if not subnets:
        raise RenderError(
            "no subnets: set spec.networking (or platform.ecs.networking) or the controller's "
            "default subnets",
            field="spec.networking.subnets",
        )
    vpc: dict[str, Any] = {
        "subnets": sorted(set(subnets)),
        "assignPublicIp": "ENABLED" if public else "DISABLED",
    }
    if groups:
        vpc["securityGroups"] = sorted(set(groups))
    return {"awsvpcConfiguration": vpc}


def _strategy(svc: OABService) -> list[dict[str, Any]]:
    return [{"capacityProvider": svc.spec.effective_ecs().capacity_provider, "weight": 1}]


def _deployment() -> dict[str, Any]:
    # One bot token = one connection: the old task stops before the new one starts (0 / 100),
    # and a new task that cannot start rolls back to the previous deployment.
    return {
        "minimumHealthyPercent": 0,
        "maximumPercent": 100,
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
    }


def render_create_service(
    svc: OABService, ctx: RenderContext, *, task_definition: str, client_token: str
) -> dict[str, Any]:
    """The exact ``CreateService`` kwargs.

    ``task_definition`` is the registered ``family:revision`` (or ARN); ``client_token`` makes
    the create idempotent in real ECS (at most 36 printable ASCII characters). Tags propagate
    from the task definition, so every task carries its generation and content hash.
    """
    meta = svc.metadata
    request: dict[str, Any] = {
        "cluster": ctx.cluster,
        "serviceName": service_name(meta.namespace, meta.name),
        "taskDefinition": task_definition,
        "desiredCount": 1,
        "clientToken": client_token,
        "capacityProviderStrategy": _strategy(svc),
        "networkConfiguration": _network(svc, ctx),
        "deploymentConfiguration": _deployment(),
        "schedulingStrategy": "REPLICA",
        "propagateTags": "TASK_DEFINITION",
        "enableECSManagedTags": True,
        "tags": _tags(_identity_tags(svc)),
    }
    if svc.spec.exec:
        request["enableExecuteCommand"] = True  # ECS's default is off: sent only to turn it on
    check_service_request(request)
    return request


def render_update_service(
    svc: OABService,
    ctx: RenderContext,
    *,
    task_definition: str,
    force_new_deployment: bool = False,
    exec_enabled: bool = False,
) -> dict[str, Any]:
    """The exact ``UpdateService`` kwargs: converge every field the controller owns.

    ``force_new_deployment`` restarts the task with the same definition (secret rotation,
    ``oabctl restart``, ECS Exec switched on or off). ``exec_enabled`` is the described
    service's ``enableExecuteCommand``: the field is sent when ``spec.exec`` wants it on or the
    service has it on (to turn it off), and left out otherwise so ECS's default stands.
    """
    meta = svc.metadata
    request: dict[str, Any] = {
        "cluster": ctx.cluster,
        "service": service_name(meta.namespace, meta.name),
        "taskDefinition": task_definition,
        "desiredCount": 1,
        "capacityProviderStrategy": _strategy(svc),
        "networkConfiguration": _network(svc, ctx),
        "deploymentConfiguration": _deployment(),
        "forceNewDeployment": force_new_deployment,
    }
    if svc.spec.exec or exec_enabled:
        request["enableExecuteCommand"] = svc.spec.exec
    check_service_request(request)
    return request


def check_service_request(request: Mapping[str, Any]) -> None:
    """Refuse a ``CreateService``/``UpdateService`` request real ECS (or the bot model) rejects.

    No ``launchType`` together with a capacity provider strategy; never more than one copy of a
    bot; a client token of at most 36 printable ASCII characters.
    """
    if request.get("launchType") and request.get("capacityProviderStrategy"):
        raise RenderError(
            "launchType and capacityProviderStrategy are mutually exclusive", field="launchType"
        )
    if request.get("desiredCount", 0) > 1:
        raise RenderError("an agent runs exactly one task", field="desiredCount")
    deployment = request.get("deploymentConfiguration", {})
    if deployment.get("maximumPercent", 100) > 100:
        raise RenderError(
            "maximumPercent above 100 would run two copies of one bot during a deployment",
            field="deploymentConfiguration.maximumPercent",
        )
    token = request.get("clientToken")
    if token is not None and not (
        0 < len(token) <= CLIENT_TOKEN_MAX and all(33 <= ord(c) <= 126 for c in token)
    ):
        raise RenderError(
            f"clientToken must be 1-{CLIENT_TOKEN_MAX} printable ASCII characters",
            field="clientToken",
        )


# ---------------------------------------------------------------------------------------------
# Validation against botocore's ECS model


@lru_cache(maxsize=1)
def _ecs_model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("ecs")


def validate_request(operation: str, params: Mapping[str, Any]) -> None:
    """Check ``params`` against botocore's own ECS model for ``operation``.

    Runs botocore's parameter validator (unknown or missing fields, types, minimums) and also
    checks what it skips: enum values and maximum lengths. Raises :class:`RenderError` listing
    every problem. Lets ``oabctl render`` promise what a real call would accept, without AWS.
    """
    from botocore.validate import ParamValidator

    shape = _ecs_model().operation_model(operation).input_shape
    report = ParamValidator().validate(dict(params), shape)
    problems = [report.generate_report()] if report.has_errors() else []
    problems.extend(_enum_and_max(params, shape, operation))
    if problems:
        raise RenderError("\n".join(problems), field=operation)


def _enum_and_max(value: Any, shape: Any, path: str) -> list[str]:
    out: list[str] = []
    kind = shape.type_name
    if kind == "structure" and isinstance(value, Mapping):
        for key, item in value.items():
            if key in shape.members:
                out.extend(_enum_and_max(item, shape.members[key], f"{path}.{key}"))
    elif kind == "list" and isinstance(value, list | tuple):
        for i, item in enumerate(value):
            out.extend(_enum_and_max(item, shape.member, f"{path}[{i}]"))
    elif kind == "map" and isinstance(value, Mapping):
        for key, item in value.items():
            out.extend(_enum_and_max(key, shape.key, f"{path}.{key}(key)"))
            out.extend(_enum_and_max(item, shape.value, f"{path}.{key}"))
    elif kind == "string" and isinstance(value, str):
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            out.append(f"{path}: {value!r} is not one of {', '.join(enum)}")
        limit = shape.metadata.get("max")
        if limit is not None and len(value) > limit:
            out.append(f"{path}: longer than {limit} characters")
    return out


# ---------------------------------------------------------------------------------------------
# Everything for one agent


@dataclass(frozen=True, kw_only=True)
class RenderedAgent:
    """What the controller would write for one agent (``oabctl render`` / ``diff --rendered``).

    The service requests use the bare family as ``taskDefinition`` (the latest ACTIVE revision;
    the controller sends ``family:revision``) and :func:`example_client_token`.
    """

    key: AgentKey
    generation: int
    artifact_uri: str
    config_toml: str
    task_definition: dict[str, Any]
    task_definition_hash: str
    create_service: dict[str, Any]
    update_service: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``-o yaml|json`` (keys in a stable, readable order)."""
        return {
            "agent": self.key,
            "generation": self.generation,
            "artifact": self.artifact_uri,
            "configToml": self.config_toml,
            "taskDefinitionHash": self.task_definition_hash,
            "registerTaskDefinition": self.task_definition,
            "createService": self.create_service,
            "updateService": self.update_service,
        }


def render_agent(svc: OABService, ctx: RenderContext) -> RenderedAgent:
    """Render everything for ``svc`` and check each request against botocore's ECS model."""
    task_def = render_task_definition(svc, ctx)
    fam = task_def["family"]
    create = render_create_service(
        svc, ctx, task_definition=fam, client_token=example_client_token(svc)
    )
    update = render_update_service(svc, ctx, task_definition=fam)
    validate_request("RegisterTaskDefinition", task_def)
    validate_request("CreateService", create)
    validate_request("UpdateService", update)
    return RenderedAgent(
        key=svc.key,
        generation=_generation(svc),
        artifact_uri=artifact_uri(ctx, svc),
        config_toml=render_config_toml(svc),
        task_definition=task_def,
        task_definition_hash=task_definition_hash(task_def),
        create_service=create,
        update_service=update,
    )


def preflight(svc: OABService, ctx: RenderContext) -> None:
    """Everything ``oabctl apply`` can check of ``svc`` without AWS; raises :class:`RenderError`.

    Renders the task definition (roles and their IAM limits, the tenant boundary of roles,
    secrets and ``bootstrapFrom``, the 64 KiB limit, botocore's ECS model) and ``config.toml``,
    exactly as the controller will. Service requests are left out: their default networking comes
    from the cluster profile, which ``apply`` does not read (the controller checks them).
    """
    validate_request("RegisterTaskDefinition", render_task_definition(svc, ctx))
    render_config_toml(svc)
