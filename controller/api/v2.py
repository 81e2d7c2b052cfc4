"""The ``oab.dev/v2`` API (upstream OpenAB's ``oabctl`` manifests), converted to the one internal
model at parse time.

Design
    Upstream's schema (``operator/schema/oabservice-v2.json``) and its ``manifest.rs`` rules are
    modelled here as they are: ``OABService`` (image, ``resources`` with string cpu/memory,
    ``configFrom``, ``bootstrapFrom``, ``secrets`` as an env-name -> reference map, ``runtime``
    ``ecs``/``kubernetes``, ``ingress``) and ``OABFleet`` (``template`` + ``agents`` overrides,
    ``${name}`` interpolation). A validated v2 service becomes an ordinary ``oab.dev/v1``
    :class:`~oab.controller.api.service.OABService` (:func:`convert_service`), so the store, the
    reconciler and the renderer know one model. What the user wrote is kept as the annotation
    :data:`LAST_APPLIED` (``get -o yaml`` shows it), like kubectl's last-applied configuration.

    ``configFrom`` is either ``s3://BUCKET/KEY`` (kept as the internal ``spec.configFrom``: the
    controller reads the object at every reconcile, so a new object version is a new rollout) or
    a path relative to the manifest file, read here (``oabctl apply`` / ``render``) into the
    internal ``spec.configToml``: the text is delivered to the agent byte for byte as that
    generation's artifact, and a changed file is a new generation. Either way the file is checked
    (:func:`check_config_text`), never rewritten.

    ``secrets`` values are an ECS-native Secrets Manager ARN (optionally ``:<jsonKey>::``), an SSM
    parameter ARN, or the shorthand ``aws-sm://<secret-id>#<json-key>``; a shorthand whose id is
    not an ARN is resolved to the secret's ARN through the context's resolver (``DescribeSecret``
    at ``oabctl apply``).

Invariants
    - Upstream's rules hold (names ``[a-z0-9][a-z0-9-]*``, namespaces ``[a-z0-9]+``, ECS cpu one of
      256..4096, architecture ``X86_64``/``ARM64``, ingress only with ECS), and so do the internal
      model's (DNS labels of at most 63 characters, Fargate cpu/memory pairs, well-formed subnet
      and security-group ids): a v2 manifest that converts is one the controller can run.
    - Unknown keys are refused (upstream's schema says ``additionalProperties: false``; its CLI
      ignores them, which hides typos).
    - A ``kubernetes`` runtime is parsed and kept but cannot be applied here (like upstream's
      ``oabctl``, which refuses it at apply).
    - A local ``configFrom`` never leaves the manifest's directory tree by accident: it is read
      relative to the manifest file (``..`` is allowed; absolute paths too), capped at
      :data:`~oab.controller.api.service.CONFIG_TOML_MAX_CHARS`, UTF-8.

Errors
    :class:`InvalidDocument` for manifest fields; :class:`ConfigFileInvalid` for a problem inside
    the config file (its file name and line), which the loader reports as such.

Time model: none (the resolver may call AWS; it is the caller's).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

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
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from oab.controller.api.ingress import IngressSpec
from oab.controller.api.issues import (
    FieldIssue,
    InvalidDocument,
    issues_from_validation_error,
)
from oab.controller.api.openab import ConfigTomlError, check_config_toml
from oab.controller.api.service import (
    CONFIG_TOML_MAX_CHARS,
    AgentKey,
    OABService,
    canonical_digest,
)
from oab.controller.base.errors import InvalidInput
from oab.controller.base.names import FLEET_LABEL

__all__ = [
    "API_VERSION_V2",
    "LAST_APPLIED",
    "ConfigCheck",
    "ConfigFileInvalid",
    "ConversionContext",
    "V2Fleet",
    "V2Service",
    "applied_view",
    "check_config_text",
    "config_secret_refs",
    "convert_service",
    "expand_v2_fleet",
    "parse_v2",
    "resolve_secret_value",
]

API_VERSION_V2: Final = "oab.dev/v2"
#: Annotation holding the v2 document as the user applied it (JSON), shown by ``get -o yaml``.
LAST_APPLIED: Final = "oab.dev/last-applied-v2"
#: ECS cpu values upstream accepts (``manifest.rs``).
ECS_CPU: Final = ("256", "512", "1024", "2048", "4096")
#: Resources of a fleet agent when neither it nor the template sets them (upstream's default).
DEFAULT_RESOURCES: Final = {"cpu": "256", "memory": "512"}

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_NAMESPACE_RE = re.compile(r"[a-z0-9]+")
_SM_ARN_RE = re.compile(r"arn:aws[a-z\-]*:secretsmanager:")
_SSM_ARN_RE = re.compile(r"arn:aws[a-z\-]*:ssm:")


def _error(kind: str, message: str, hint: str) -> PydanticCustomError:
    return PydanticCustomError(kind, "{text}", {"text": message, "hint": hint})


def _matches(regex: re.Pattern[str], what: str, hint: str) -> AfterValidator:
    def check(value: str) -> str:
        if regex.fullmatch(value) is None:
            raise _error("format", f"{value!r} must match {what}", hint)
        return value

    return AfterValidator(check)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", hide_input_in_errors=True
    )


Name = Annotated[
    StrictStr,
    _matches(_NAME_RE, "[a-z0-9][a-z0-9-]*", "use lowercase letters, digits and '-'"),
]
Namespace = Annotated[
    StrictStr,
    _matches(
        _NAMESPACE_RE,
        "[a-z0-9]+",
        "use lowercase letters and digits only: '-' is the delimiter of oab-{namespace}-{name}",
    ),
]


class Metadata(_Model):
    """``metadata`` of a v2 ``OABService``."""

    name: Name
    namespace: Namespace
    generation: StrictInt | None = Field(default=None, ge=0)


class FleetMetadata(_Model):
    """``metadata`` of a v2 ``OABFleet`` (its name is not part of any agent's identity)."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=253)]
    namespace: Namespace


def _ecs_cpu(value: str) -> str:
    if value not in ECS_CPU:
        raise _error(
            "ecs_cpu", f"{value!r} is not an ECS cpu value", "use one of " + ", ".join(ECS_CPU)
        )
    return value


class Resources(_Model):
    """``resources``: ECS task size as strings (``cpu: "256"``, ``memory: "512"``)."""

    cpu: Annotated[StrictStr, AfterValidator(_ecs_cpu)]
    memory: Annotated[
        StrictStr, _matches(re.compile(r"[1-9][0-9]{2,5}"), "MiB digits", 'write e.g. "512"')
    ]


class Networking(_Model):
    """``runtime.networking`` (awsvpc)."""

    subnets: list[StrictStr] = Field(min_length=1, max_length=16)
    security_groups: list[StrictStr] = Field(min_length=1, max_length=5)
    assign_public_ip: StrictBool = False


class EcsRuntime(_Model):
    """``runtime: {type: ecs}``."""

    type: Literal["ecs"]
    capacity_provider: Literal["FARGATE", "FARGATE_SPOT"] = "FARGATE"
    architecture: Literal["X86_64", "ARM64"] = "X86_64"
    task_role_arn: StrictStr | None = None
    networking: Networking


class KubernetesRuntime(_Model):
    """``runtime: {type: kubernetes}``: kept and ignored here (as ``platform.k8s`` is)."""

    type: Literal["kubernetes"]
    node_selector: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    service_account: StrictStr | None = None
    tolerations: list[dict[StrictStr, Any]] = Field(default_factory=list)


Runtime = Annotated[EcsRuntime | KubernetesRuntime, Field(discriminator="type")]
Secrets = dict[
    Annotated[
        StrictStr,
        _matches(
            re.compile(r"[A-Z_][A-Z0-9_]*"),
            "an environment variable name",
            "use uppercase letters, digits and '_'",
        ),
    ],
    Annotated[StrictStr, Field(min_length=1, max_length=2048)],
]
_Uri = Annotated[StrictStr, Field(min_length=1, max_length=1024)]


def _no_ingress_on_kubernetes(runtime: Any, ingress: IngressSpec | None) -> None:
    if ingress is not None and isinstance(runtime, KubernetesRuntime):
        raise _error(
            "ingress_runtime",
            "spec.ingress is only supported with ECS runtime",
            "use native Kubernetes Ingress otherwise, or remove spec.ingress",
        )


class ServiceSpec(_Model):
    """``spec`` of a v2 ``OABService``."""

    image: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    resources: Resources
    config_from: _Uri
    bootstrap_from: _Uri | None = None
    secrets: Secrets = Field(default_factory=dict)
    runtime: Runtime
    ingress: IngressSpec | None = None

    @model_validator(mode="after")
    def _ingress_runtime(self) -> ServiceSpec:
        _no_ingress_on_kubernetes(self.runtime, self.ingress)
        return self


class FleetTemplate(_Model):
    """``spec.template`` of a v2 ``OABFleet``: what every agent starts from (no configFrom)."""

    image: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    resources: Resources | None = None
    bootstrap_from: _Uri | None = None
    secrets: Secrets | None = None
    runtime: Runtime
    ingress: IngressSpec | None = None


class AgentOverride(_Model):
    """``spec.agents[]``: one agent; set fields replace the template's (whole values)."""

    name: Name
    config_from: _Uri
    image: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None
    resources: Resources | None = None
    bootstrap_from: _Uri | None = None
    secrets: Secrets | None = None
    ingress: IngressSpec | None = None


class FleetSpec(_Model):
    """``spec`` of a v2 ``OABFleet``."""

    template: FleetTemplate
    agents: list[AgentOverride] = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _unique_names(self) -> FleetSpec:
        # Upstream does not check this; two agents with one name would be one ECS service.
        seen: set[str] = set()
        for agent in self.agents:
            if agent.name in seen:
                raise _error(
                    "duplicate_agent",
                    f"agent {agent.name} appears twice",
                    "agent names are unique within a fleet",
                )
            seen.add(agent.name)
        return self


class V2Service(_Model):
    """An ``oab.dev/v2`` ``OABService`` as written."""

    api_version: Literal["oab.dev/v2"] = API_VERSION_V2
    kind: Literal["OABService"] = "OABService"
    metadata: Metadata
    spec: ServiceSpec


class V2Fleet(_Model):
    """An ``oab.dev/v2`` ``OABFleet``; ``children`` are its agents converted (set by
    :func:`parse_v2`)."""

    api_version: Literal["oab.dev/v2"] = API_VERSION_V2
    kind: Literal["OABFleet"] = "OABFleet"
    metadata: FleetMetadata
    spec: FleetSpec
    children: SkipJsonSchema[list[OABService]] = Field(default_factory=list, exclude=True)

    @property
    def key(self) -> AgentKey:
        """``namespace/name`` of the fleet object."""
        return AgentKey(f"{self.metadata.namespace}/{self.metadata.name}")

    def spec_digest(self) -> str:
        """sha256 (hex) of the spec's canonical JSON."""
        return canonical_digest(self.spec.model_dump(mode="json", by_alias=True))

    def to_manifest(self) -> dict[str, Any]:
        """The fleet as stored: exactly the v2 document (the controller reads only children)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ----------------------------------------------------------------------------- config files


@dataclass(frozen=True)
class ConfigCheck:
    """What a checked config.toml needs: ``${VAR}`` placeholders and ``[secrets.refs]`` names."""

    placeholders: frozenset[str] = frozenset()
    secret_refs: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ConfigFileInvalid(InvalidInput):
    """A problem inside a config.toml file: ``source`` (its path), ``line`` (1-based, if known)."""

    reason = "InvalidConfigFile"

    source: str
    line: int | None
    message: str
    hint: str

    def __str__(self) -> str:
        where = self.source + (f":{self.line}" if self.line is not None else "")
        return f"{where}: {self.message}; {self.hint}"


def check_config_text(text: str, *, source: str) -> ConfigCheck:
    """Check a config.toml for delivery as is, against the config model of the OpenAB release
    this project speaks (:func:`oab.controller.api.openab.check_config_toml`: TOML syntax with its
    line, known keys type-checked, no literal in a token field, ``[secrets.refs]`` well formed;
    unknown keys pass, as OpenAB lets them); return what the file refers to.

    Raises :class:`ConfigFileInvalid` for the first problem, with the line of its key when the
    file names it.
    """
    try:
        checked = check_config_toml(text, source=source, strict=False)
    except ConfigTomlError as exc:
        first = exc.issues[0] if exc.issues else None
        line = exc.line
        if line is None and first is not None and first.path:
            parts = [str(p) for p in first.path]
            table = ".".join(parts[:-1]) if len(parts) > 1 else parts[0]
            line = _line_of_key(text, table, parts[-1] if len(parts) > 1 else None)
        message = "; ".join(
            (f"{issue.dotted}: " if issue.path else "") + issue.message for issue in exc.issues
        )
        hint = (first.hint if first is not None else None) or "fix the file (OpenAB refuses it)"
        raise ConfigFileInvalid(source, line, message, hint) from None
    return ConfigCheck(
        placeholders=checked.placeholder_names, secret_refs=dict(checked.secret_refs)
    )


def config_secret_refs(text: str) -> dict[str, str]:
    """The ``[secrets.refs]`` of a config.toml already checked by :func:`check_config_text`
    (``{}`` for text that does not parse: that was refused where it was read)."""
    try:
        refs = tomllib.loads(text).get("secrets", {}).get("refs", {})
    except (tomllib.TOMLDecodeError, AttributeError):
        return {}
    return (
        {str(k): v for k, v in refs.items() if isinstance(v, str)} if isinstance(refs, dict) else {}
    )


def _line_of_key(text: str, table: str, key: str | None) -> int | None:
    """Line of ``key`` inside ``[table]`` (or of the table header), by a plain scan."""
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            current = stripped.strip("[]").strip()
            if key is None and current == table:
                return number
        elif current == table and key is not None and stripped.split("=", 1)[0].strip() == key:
            return number
    return None


# ----------------------------------------------------------------------------- conversion


def _read_capped(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(limit + 1)


@dataclass(frozen=True, kw_only=True)
class ConversionContext:
    """What converting a v2 document needs from outside the document.

    - ``base_dir``: the manifest file's directory (a local ``configFrom`` is relative to it);
      ``None`` refuses local paths (e.g. a document read from the store).
    - ``resolve_secret``: secret id -> ARN (``DescribeSecret``); ``None`` refuses the
      ``aws-sm://<name>#key`` shorthand with a bare name (its ARN cannot be known offline).
    - ``read_file``: reads a local config file (at most ``limit`` bytes + 1); injectable for tests.
    """

    base_dir: Path | None = None
    resolve_secret: Callable[[str], str] | None = None
    read_file: Callable[[Path, int], bytes] = field(default=_read_capped)


def resolve_secret_value(value: str, *, resolve: Callable[[str], str] | None) -> tuple[str, str]:
    """``(source, reference)`` of one ``spec.secrets`` value: ``("secretsmanager", ARN[:key::])``
    or ``("ssm", ARN)``. Raises ``PydanticCustomError`` with a hint for anything else."""
    if value.startswith("aws-sm://"):
        secret_id, sep, json_key = value.removeprefix("aws-sm://").rpartition("#")
        if not sep or not secret_id or not json_key:
            raise _error(
                "secret_ref",
                f"invalid aws-sm:// secret ref {value!r}",
                "write aws-sm://<secret-id>#<json-key>",
            )
        if secret_id.startswith("arn:"):
            arn = secret_id
        elif resolve is None:
            raise _error(
                "secret_unresolved",
                f"the ARN of secret {secret_id!r} is not known offline",
                "write the full ARN (aws-sm://arn:aws:secretsmanager:...#KEY), or use oabctl "
                "apply, which resolves it with DescribeSecret",
            )
        else:
            try:
                arn = resolve(secret_id)
            except LookupError as exc:
                raise _error(
                    "secret_not_found",
                    str(exc),
                    "create the secret first (or write its full ARN), and check the region",
                ) from None
        return "secretsmanager", f"{arn}:{json_key}::"
    if _SM_ARN_RE.match(value):
        return "secretsmanager", value
    if _SSM_ARN_RE.match(value):
        return "ssm", value
    raise _error(
        "secret_ref",
        "not a Secrets Manager or SSM ARN, nor an aws-sm:// reference",
        "write arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX:JSON_KEY:: or "
        "aws-sm://<secret-id>#<json-key>",
    )


def _fail(path: tuple[str | int, ...], exc: PydanticCustomError) -> InvalidDocument:
    ctx = exc.context or {}
    return InvalidDocument([FieldIssue(path, exc.message(), ctx.get("hint"))])


def _internal_secrets(
    secrets: Mapping[str, str], ctx: ConversionContext, *, blame: tuple[str | int, ...]
) -> list[dict[str, Any]]:
    """v2's ``secrets`` map (env name -> ``ssm://``/``aws-sm://`` reference) as v1 entries."""
    out: list[dict[str, Any]] = []
    for env_name, value in secrets.items():
        try:
            source, ref = resolve_secret_value(value, resolve=ctx.resolve_secret)
        except PydanticCustomError as exc:
            raise _fail((*blame, "secrets", env_name), exc) from None
        key = "path" if source == "ssm" else "arn"
        out.append({"name": env_name, "source": source, key: ref})
    return out


def convert_service(
    doc: V2Service,
    ctx: ConversionContext,
    *,
    labels: Mapping[str, str] | None = None,
    blame: tuple[str | int, ...] = ("spec",),
) -> OABService:
    """The internal (``oab.dev/v1``) ``OABService`` equivalent of a validated v2 service.

    ``blame`` prefixes field paths of issues (a fleet passes ``spec.agents[i]``). Raises
    :class:`InvalidDocument` or :class:`ConfigFileInvalid`.
    """
    spec = doc.spec
    if isinstance(spec.runtime, KubernetesRuntime):
        raise InvalidDocument(
            [
                FieldIssue(
                    (*blame, "runtime", "type"),
                    "the kubernetes runtime cannot be applied by this controller (it runs "
                    "agents on ECS)",
                    "use runtime: {type: ecs, networking: {...}}",
                )
            ]
        )
    runtime = spec.runtime
    internal: dict[str, Any] = {
        "cpu": int(spec.resources.cpu),
        "memory": int(spec.resources.memory),
        "taskDefinition": {"image": spec.image},
        "secrets": _internal_secrets(spec.secrets, ctx, blame=blame),
        "capacityProvider": runtime.capacity_provider,
        "networking": runtime.networking.model_dump(by_alias=True),
    }
    ecs: dict[str, Any] = {}
    if "architecture" in runtime.model_fields_set:
        ecs["architecture"] = runtime.architecture  # else the platform's default
    if runtime.task_role_arn:
        ecs["taskRole"] = runtime.task_role_arn
    if ecs:
        internal["platform"] = {"ecs": ecs}
    if spec.bootstrap_from is not None:
        internal["bootstrapFrom"] = spec.bootstrap_from
    if spec.ingress is not None:
        internal["ingress"] = spec.ingress.model_dump(by_alias=True)
    internal.update(_config_source(spec.config_from, spec.secrets, ctx, blame=blame))
    written = doc.model_dump(mode="json", by_alias=True, exclude_unset=True)
    meta: dict[str, Any] = {
        "name": doc.metadata.name,
        "namespace": doc.metadata.namespace,
        "annotations": {LAST_APPLIED: json.dumps(written, sort_keys=True, separators=(",", ":"))},
    }
    if labels:
        meta["labels"] = dict(labels)
    raw = {"apiVersion": "oab.dev/v1", "kind": "OABService", "metadata": meta, "spec": internal}
    try:
        return OABService.model_validate(raw)
    except ValidationError as exc:
        raise InvalidDocument(
            [_blame_internal(i, blame) for i in issues_from_validation_error(exc, raw)]
        ) from exc


#: Internal spec field -> the v2 field that produced it.
_V2_FIELD: Final = {
    "cpu": ("resources", "cpu"),
    "memory": ("resources", "memory"),
    "taskDefinition": ("image",),
    "networking": ("runtime", "networking"),
    "capacityProvider": ("runtime", "capacityProvider"),
    "platform": ("runtime",),
    "bootstrapFrom": ("bootstrapFrom",),
    "secrets": ("secrets",),
    "ingress": ("ingress",),
    "configToml": ("configFrom",),
    "configFrom": ("configFrom",),
}


def _blame_internal(issue: FieldIssue, blame: tuple[str | int, ...]) -> FieldIssue:
    """An issue of the converted v1 document, pointed at the v2 field the value came from."""
    path = issue.path
    if path[:1] == ("metadata",):
        return issue if blame == ("spec",) else FieldIssue((*blame, "name"), *_text(issue))
    if len(path) >= 2 and path[0] == "spec":
        top = str(path[1])
        mapped = _V2_FIELD.get(top, (top,))
        rest = path[2:] if top in ("networking", "ingress", "bootstrapFrom") else ()
        return FieldIssue((*blame, *mapped, *rest), *_text(issue))
    return FieldIssue(blame, *_text(issue))


def _text(issue: FieldIssue) -> tuple[str, str | None]:
    return issue.message, issue.hint


def _config_source(
    config_from: str,
    secrets: Mapping[str, str],
    ctx: ConversionContext,
    *,
    blame: tuple[str | int, ...],
) -> dict[str, str]:
    """``{"configFrom": s3 URL}`` or ``{"configToml": text}`` (a local file, read and checked)."""
    where = (*blame, "configFrom")
    if config_from.startswith("s3://"):
        return {"configFrom": config_from}
    if "://" in config_from:
        raise InvalidDocument(
            [
                FieldIssue(
                    where,
                    f"{config_from!r}: only s3:// URLs and local paths are supported",
                    "upload the file to S3, or put it next to the manifest and write its "
                    "relative path",
                )
            ]
        )
    if ctx.base_dir is None:
        raise InvalidDocument(
            [
                FieldIssue(
                    where,
                    "a local configFrom path can only be read from a manifest file",
                    "apply the manifest with -f FILE, or use an s3:// URL",
                )
            ]
        )
    path = ctx.base_dir / config_from
    try:
        data = ctx.read_file(path, CONFIG_TOML_MAX_CHARS)
    except OSError as exc:
        raise InvalidDocument(
            [
                FieldIssue(
                    where,
                    f"cannot read {path}: {exc.strerror or exc}",
                    "write a path relative to the manifest file",
                )
            ]
        ) from None
    if len(data) > CONFIG_TOML_MAX_CHARS:
        raise ConfigFileInvalid(
            str(path),
            None,
            f"larger than {CONFIG_TOML_MAX_CHARS // 1024} KiB",
            "keep config.toml small (agent state belongs in bootstrapFrom)",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigFileInvalid(
            str(path), line, "not UTF-8", "save the file as UTF-8 (OpenAB reads UTF-8)"
        ) from None
    check = check_config_text(text, source=str(path))
    missing = sorted(check.placeholders - set(secrets))
    if missing:
        raise ConfigFileInvalid(
            str(path),
            _first_line(text, f"${{{missing[0]}}}"),
            "${"
            + "}, ${".join(missing)
            + "} "
            + ("is" if len(missing) == 1 else "are")
            + " not declared",
            "declare each in spec.secrets (OpenAB substitutes ${VAR} from the container's "
            "environment; an undeclared one stays empty)",
        )
    return {"configToml": text}


def _first_line(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return None


# ----------------------------------------------------------------------------- fleets


def _interpolate(value: str, name: str) -> str:
    return value.replace("${name}", name)


def expand_v2_fleet(fleet: V2Fleet, ctx: ConversionContext) -> list[OABService]:
    """One converted ``OABService`` per agent, labelled ``oab.dev/fleet: <fleet name>``.

    Upstream's expansion: ``image``, ``resources``, ``bootstrapFrom``, ``secrets`` and
    ``ingress`` of the agent replace the template's (whole values, no merge); ``runtime`` is the
    template's; ``${name}`` becomes the agent's name in ``configFrom``, ``bootstrapFrom`` and every
    secret value. Raises :class:`InvalidDocument` (every agent's issues) or
    :class:`ConfigFileInvalid` (the first bad file).
    """
    template = fleet.spec.template
    children: list[OABService] = []
    issues: list[FieldIssue] = []
    for index, agent in enumerate(fleet.spec.agents):
        name = agent.name
        secrets = agent.secrets if agent.secrets is not None else (template.secrets or {})
        bootstrap = agent.bootstrap_from or template.bootstrap_from
        resources = agent.resources or template.resources or Resources(**DEFAULT_RESOURCES)
        ingress = agent.ingress or template.ingress
        service = V2Service(
            metadata=Metadata(name=name, namespace=fleet.metadata.namespace),
            spec=ServiceSpec(
                image=agent.image or template.image,
                resources=resources,
                config_from=_interpolate(agent.config_from, name),
                bootstrap_from=_interpolate(bootstrap, name) if bootstrap else None,
                secrets={k: _interpolate(v, name) for k, v in secrets.items()},
                runtime=template.runtime,
                ingress=ingress,
            ),
        )
        try:
            children.append(
                convert_service(
                    service,
                    ctx,
                    labels={FLEET_LABEL: fleet.metadata.name},
                    blame=("spec", "agents", index),
                )
            )
        except InvalidDocument as exc:
            issues.extend(exc.issues)
    if issues:
        raise InvalidDocument(issues)
    return children


# ----------------------------------------------------------------------------- entry point


def applied_view(document: Mapping[str, Any]) -> dict[str, Any] | None:
    """A stored agent's document as the user applied it (``get -o yaml|json``), or ``None``
    when it was not applied as ``oab.dev/v2`` (or its annotation does not decode).

    The ``oab.dev/v2`` document of :data:`LAST_APPLIED` with the server's metadata (generation,
    labels, other annotations) and ``status``/``workUnit`` added by the caller. The annotation is
    stored data: read only if it is a JSON object of the same kind, name and namespace (the
    document's own size cap bounds it), else the internal form is shown.
    """
    meta = document.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    annotations = meta.get("annotations")
    annotations = annotations if isinstance(annotations, Mapping) else {}
    raw = annotations.get(LAST_APPLIED)
    if not isinstance(raw, str):
        return None
    try:
        applied = json.loads(raw)
    except ValueError:
        return None
    applied_meta = applied.get("metadata") if isinstance(applied, dict) else None
    if (
        not isinstance(applied, dict)
        or applied.get("apiVersion") != API_VERSION_V2
        or applied.get("kind") != document.get("kind")
        or not isinstance(applied_meta, dict)
        or any(applied_meta.get(k) != meta.get(k) for k in ("name", "namespace"))
    ):
        return None
    server = {k: v for k, v in meta.items() if k != "annotations"}
    others = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    applied["metadata"] = {**applied_meta, **server, **({"annotations": others} if others else {})}
    return dict(applied)


def parse_v2(data: Mapping[str, Any], ctx: ConversionContext) -> OABService | V2Fleet:
    """Validate a v2 document and convert it: an ``OABService`` (internal form) or a
    :class:`V2Fleet` whose ``children`` are converted. Raises :class:`InvalidDocument` or
    :class:`ConfigFileInvalid`."""
    kind = data.get("kind")
    if kind == "OABService":
        try:
            doc = V2Service.model_validate(dict(data))
        except ValidationError as exc:
            raise InvalidDocument(issues_from_validation_error(exc, data)) from exc
        return convert_service(doc, ctx)
    try:
        fleet = V2Fleet.model_validate({k: v for k, v in data.items() if k != "children"})
    except ValidationError as exc:
        raise InvalidDocument(issues_from_validation_error(exc, data)) from exc
    fleet.children = expand_v2_fleet(fleet, ctx)
    return fleet
