"""oabctl settings: one validated object built from flags, the environment and a profile file.

Design
------
Precedence, highest first (each source only fills what the ones above left unset):

1. command-line flags (``--region``, ``--bucket``, ... ; ``None`` means "not given");
2. the environment: ``OAB_*`` for this tool, then the standard ``AWS_*`` variables boto3 reads
   too (``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``);
3. the selected profile of the TOML file ``~/.oabctl/config`` (``OABCTL_CONFIG`` overrides the
   path; tests use it);
4. the defaults documented on :class:`Settings`.

The file holds named profiles and optionally which one is the default::

    default_profile = "prod"

    [profiles.prod]
    region = "eu-west-1"
    bucket = "acme-oab-control-plane"
    table_prefix = "oab"
    cluster = "oab"
    subnets = ["subnet-0abc"]
    security_groups = ["sg-0abc"]
    role_allowlist = ["arn:aws:iam::{account}:role/oab/{namespace}/shared-exec"]

The profile is chosen by ``--profile`` > ``OAB_PROFILE`` > ``default_profile`` > ``"default"``;
a profile that is named explicitly but missing from the file is an error, the implicit
``"default"`` may be absent.

Invariants: a :class:`Settings` is immutable and validated once; unknown keys in the file are
errors (a typo must not silently fall back to a default); no secret ever lives here (AWS
credentials come from the standard credential chain, never from this file).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oab.controller.base.errors import OabError
from oab.controller.base.names import AGENT_LOG_GROUP, TableNames
from oab.controller.core.tenancy import check_allowlist

__all__ = [
    "CONFIG_ENV",
    "ENV_VARS",
    "LIST_FIELDS",
    "Settings",
    "SettingsError",
    "config_path",
    "load_settings",
]

#: Environment variable that overrides the settings file path.
CONFIG_ENV = "OABCTL_CONFIG"

#: Environment variables per setting, highest priority first.
ENV_VARS: Mapping[str, tuple[str, ...]] = {
    "region": ("OAB_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    "bucket": ("OAB_BUCKET",),
    "table_prefix": ("OAB_TABLE_PREFIX",),
    "cluster": ("OAB_CLUSTER",),
    "endpoint": ("OAB_ENDPOINT", "AWS_ENDPOINT_URL"),
    "aws_profile": ("AWS_PROFILE",),
    "agent_image": ("OAB_AGENT_IMAGE",),
    "execution_role": ("OAB_EXECUTION_ROLE",),
    "task_role": ("OAB_TASK_ROLE",),
    "subnets": ("OAB_SUBNETS",),
    "security_groups": ("OAB_SECURITY_GROUPS",),
    "account": ("OAB_ACCOUNT",),
    "agent_log_group": ("OAB_AGENT_LOG_GROUP",),
    "role_allowlist": ("OAB_ROLE_ALLOWLIST",),
    "secret_allowlist": ("OAB_SECRET_ALLOWLIST",),
}

#: Settings that are lists; in the environment they are comma-separated.
LIST_FIELDS = frozenset({"subnets", "security_groups", "role_allowlist", "secret_allowlist"})


class SettingsError(OabError):
    """Settings could not be read or are invalid (exit code 1: fix the input)."""

    retryable = False
    reason = "InvalidSettings"


class Settings(BaseModel):
    """Everything oabctl needs to find the control plane. Immutable; validated on construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: str = Field(default="default", description="Name of the profile that was used.")
    region: str = Field(
        default="us-east-1", description="AWS region of the control plane (default us-east-1)."
    )
    bucket: str = Field(
        default="oab-control-plane",
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
        description="Versioned control-plane bucket holding manifests and artifacts.",
    )
    table_prefix: str = Field(
        default="oab",
        pattern=r"^[A-Za-z0-9_.-]{1,200}$",
        description="Prefix of the four tables: {prefix}-lease, -queue, -state, -runlog.",
    )
    cluster: str = Field(
        default="oab",
        pattern=r"^[A-Za-z0-9_-]{1,255}$",
        description="ECS cluster the agents run in.",
    )
    endpoint: str | None = Field(
        default=None,
        description="Endpoint override for every AWS service (the local emulator); None = AWS.",
    )
    aws_profile: str | None = Field(
        default=None, description="boto3 credential profile; None = the default chain."
    )
    account: str | None = Field(
        default=None,
        pattern=r"^[0-9]{12}$",
        description="AWS account id for role ARNs; None = asked from STS when needed.",
    )
    agent_image: str = Field(
        default="ghcr.io/openabdev/oab-controller:0.1.0",
        description="Controller image with `oab-agent`, run as each task's init and snapshot "
        "sidecar containers (the agent container's image comes from the manifest).",
    )
    execution_role: str = Field(
        default="arn:aws:iam::{account}:role/oab-agent-exec-{namespace}-{name}",
        description="Execution role ARN template (resolves secrets); {account} {namespace} {name}.",
    )
    task_role: str = Field(
        default="arn:aws:iam::{account}:role/oab-agent-task-{namespace}-{name}",
        description="Task role ARN template (reads artifacts, bootstrap archives).",
    )
    agent_log_group: str = Field(
        default=AGENT_LOG_GROUP,
        description="CloudWatch log group of every agent container (streams {ns}/{name}/...).",
    )
    subnets: tuple[str, ...] = Field(
        default=(), description="Default awsvpc subnets; empty = those recorded by `oabctl init`."
    )
    security_groups: tuple[str, ...] = Field(
        default=(), description="Default security groups; empty = those recorded by init."
    )
    role_allowlist: tuple[str, ...] = Field(
        default=(),
        description="ARN globs of shared roles a manifest may name in platform.ecs.executionRole/"
        "taskRole besides the agent's own; {partition} {region} {account} {namespace} {name}. "
        "Empty = only the agent's own roles (the tenant boundary, README 'Security model').",
    )
    secret_allowlist: tuple[str, ...] = Field(
        default=(),
        description="ARN globs of shared secrets a manifest may reference besides the agent's own "
        "/oab/{ns}/{name}/ (SSM) and oab/{ns}/{name}/ (Secrets Manager) paths; same placeholders.",
    )

    @field_validator("execution_role", "task_role")
    @classmethod
    def _template_fields(cls, value: str) -> str:
        try:
            value.format(account="0" * 12, namespace="ns", name="n")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"only {{account}}, {{namespace}} and {{name}} may appear in a role template: {exc}"
            ) from exc
        return value

    @field_validator("role_allowlist")
    @classmethod
    def _role_allowlist(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_allowlist("role", value)

    @field_validator("secret_allowlist")
    @classmethod
    def _secret_allowlist(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_allowlist("secret", value)

    @property
    def tables(self) -> TableNames:
        """The control-plane table names for :attr:`table_prefix`."""
        return TableNames.with_prefix(self.table_prefix)

    @property
    def is_local(self) -> bool:
        """True when the endpoint is the loopback emulator (init then creates networking)."""
        if not self.endpoint:
            return False
        host = self.endpoint.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        return host in {"127.0.0.1", "localhost", "::1", "[::1]"}

    def role_arns(self, *, namespace: str, name: str, account: str) -> tuple[str, str]:
        """(execution role ARN, task role ARN) for one agent."""
        values = {"account": account, "namespace": namespace, "name": name}
        return self.execution_role.format(**values), self.task_role.format(**values)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The settings file: ``$OABCTL_CONFIG`` or ``~/.oabctl/config``."""
    environ = os.environ if env is None else env
    override = environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    return Path("~/.oabctl/config").expanduser()


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read settings file: {exc}") from exc
    unknown = set(data) - {"default_profile", "profiles"}
    if unknown:
        raise SettingsError(
            f"{path}: unknown top-level keys {sorted(unknown)}; "
            "put settings under [profiles.NAME] and choose one with default_profile"
        )
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field_name, names in ENV_VARS.items():
        for var in names:
            raw = env.get(var)
            if raw:
                values[field_name] = (
                    tuple(p.strip() for p in raw.split(",") if p.strip())
                    if field_name in LIST_FIELDS
                    else raw
                )
                break
    return values


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Settings:
    """Merge flags > env > file profile > defaults into one validated :class:`Settings`.

    ``flags`` values of ``None`` count as "not given". ``env`` defaults to ``os.environ`` and
    ``path`` to :func:`config_path`. Raises :class:`SettingsError` with the source named.
    """
    environ = dict(os.environ if env is None else env)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    file_path = path or config_path(environ)
    data = _read_file(file_path)
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise SettingsError(f"{file_path}: 'profiles' must be a table of [profiles.NAME]")
    explicit = (
        given.pop("profile", None) or environ.get("OAB_PROFILE") or data.get("default_profile")
    )
    profile = str(explicit or "default")
    if explicit and profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise SettingsError(
            f"{file_path}: profile {profile!r} not found (known profiles: {known}); "
            f"add [profiles.{profile}] or choose another with --profile"
        )
    from_file = profiles.get(profile, {})
    if not isinstance(from_file, dict):
        raise SettingsError(f"{file_path}: [profiles.{profile}] must be a table")
    if "profile" in from_file:
        raise SettingsError(f"{file_path}: [profiles.{profile}].profile is not a setting")
    merged: dict[str, Any] = {**from_file, **_from_env(environ), **given, "profile": profile}
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(
            f"invalid settings (profile {profile!r}, file {file_path}): {problems}"
        ) from exc
