"""The tenant boundary: which IAM roles, secrets and state locations one agent may use.

Design
------
Every agent (``namespace/name``) is a tenant of the shared control plane. Its manifest names the
roles its task runs with (``spec.platform.ecs.executionRole``/``taskRole``), the secrets ECS
injects (``spec.secrets``) and the S3 object its HOME is restored from and snapshotted to
(``spec.bootstrapFrom``). Unchecked, one team's manifest could run its own image with another
agent's execution role (and so receive that agent's secrets) or task role (and read or overwrite
its HOME archive), or point ``bootstrapFrom`` into the control plane's own bucket so that the
snapshot sidecar overwrites manifests or artifacts. :class:`TenantPolicy` decides, as a pure
function of the agent, the value and the platform team's settings:

- **Roles.** An override is allowed when it is the agent's *own* role, exactly the ARN the
  settings' template (``execution_role`` / ``task_role``) yields for this namespace and name in
  the same slot, or when it matches an entry of ``role_allowlist``. There is deliberately no
  per-agent name *pattern*: namespaces and names contain ``-``, so a pattern such as
  ``oab-agent-task-a-b-*`` (agent ``a/b``) would also match ``oab-agent-task-a-b-c``, the role of
  agent ``a-b/c`` or ``a/b-c``.
- **Secrets.** A reference is allowed when it is under the agent's own paths, which are what the
  per-agent execution role grants (``ops/cloudformation/agent-roles.yaml``): SSM parameters
  ``/oab/{namespace}/{name}/...`` and Secrets Manager secrets named ``oab/{namespace}/{name}/...``,
  in the control plane's partition, region and account; otherwise it must match an entry of
  ``secret_allowlist``. The ``/`` separators make these prefixes unambiguous. A foreign reference
  would only fail at task start with an unclear AccessDenied; refusing it here names the field.
- **bootstrapFrom** may not point under a prefix of the control-plane bucket that the controller
  or its agents write or read (:data:`~oab.controller.base.names.CONTROL_PLANE_PREFIXES`, the one
  list).
- **[secrets.refs]** of a delivered config.toml (OpenAB resolves them itself, with the task
  role): ``aws-sm://`` references follow the secret rule above (the agent's own secrets or the
  allow-list; a bare secret id is matched as the ARN it names in this region and account);
  ``exec://`` runs a program of the agent's own image and reads nothing through IAM; any other
  scheme is refused (OpenAB refuses it at start-up).
- **configFrom** (``oab.dev/v2``, an ``s3://`` config.toml the controller reads with its own role)
  may not be any object of the control-plane bucket: the controller would deliver another
  agent's manifest or rendered artifact to this one (:func:`config_from_refusal`).

Allow-list entries are ARN globs (:func:`fnmatch.fnmatchcase`: ``*`` matches any run of
characters, ``/`` included; ``?`` one character; ``[...]`` a set), case-sensitive, in which
``{partition}``, ``{region}``, ``{account}``, ``{namespace}`` and ``{name}`` are replaced per agent
before matching (so ``arn:aws:iam::{account}:role/oab/{namespace}/shared-exec`` shares one role
per namespace). Secret entries match the secret's canonical ARN: an SSM name becomes
``arn:{partition}:ssm:{region}:{account}:parameter/NAME``; a Secrets Manager ARN is matched
without the ECS ``:json-key:version-stage:version-id`` suffix.

Invariants
    - Pure and deterministic: no AWS call, no clock. The same answer at ``oabctl apply`` and at
      every reconcile for the same settings.
    - When the account is unknown (``oabctl`` without the ``account`` setting), account segments
      of ARNs are not compared; the controller, which always knows its account, still checks them.
    - Refusals are messages naming what was refused (a role or secret *reference*, never a secret
      value) and what would be accepted.

Time model: none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final, Literal

from oab.controller.base.names import (
    CONTROL_PLANE_PREFIXES,
    agent_parameter_prefix,
    agent_secret_prefix,
)

__all__ = [
    "ALLOWLIST_FIELDS",
    "MAX_ALLOWLIST_ENTRIES",
    "ROLE_NAME_MAX",
    "ROLE_PATH_MAX",
    "Refusal",
    "RoleArn",
    "TenantPolicy",
    "check_allowlist",
    "config_from_refusal",
    "control_plane_prefix",
    "parse_role_arn",
]

#: Placeholders an allow-list entry may contain, filled per agent before matching.
ALLOWLIST_FIELDS: Final[tuple[str, ...]] = ("partition", "region", "account", "namespace", "name")
#: At most this many entries per allow-list (each at most 2048 characters, an ARN's maximum).
MAX_ALLOWLIST_ENTRIES: Final = 100
_ENTRY_MAX: Final = 2048

#: IAM limits: a role name is at most 64 characters, its path at most 512.
ROLE_NAME_MAX: Final = 64
ROLE_PATH_MAX: Final = 512

_ROLE_ARN_RE = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role(?P<path>/(?:[\w+=,.@-]+/)*)"
    r"(?P<name>[\w+=,.@-]+)"
)
_ROLE_ENTRY_RE = re.compile(r"arn:[^:\s]+:iam::[^:\s]*:role/\S+")
_SECRET_ENTRY_RE = re.compile(
    r"arn:[^:\s]+:(?:ssm:[^:\s]*:[^:\s]*:parameter/|secretsmanager:[^:\s]*:[^:\s]*:secret:)\S+"
)
_SSM_ARN_RE = re.compile(
    r"arn:(?P<partition>[^:]+):ssm:(?P<region>[^:]+):(?P<account>[^:]+):parameter(?P<name>/.+)"
)
_SM_ARN_RE = re.compile(
    r"arn:(?P<partition>[^:]+):secretsmanager:(?P<region>[^:]+):(?P<account>[^:]+)"
    r":secret:(?P<name>[^:]+)(?::[^:]*:[^:]*:[^:]*)?"
)

AllowlistKind = Literal["role", "secret"]


@dataclass(frozen=True)
class Refusal:
    """Why a value is outside the agent's boundary (``message``) and what to do (``hint``)."""

    message: str
    hint: str


@dataclass(frozen=True, kw_only=True)
class RoleArn:
    """A parsed IAM role ARN."""

    partition: str
    account: str
    path: str
    name: str


def parse_role_arn(value: str) -> RoleArn | None:
    """The parts of an IAM role ARN, or ``None`` if ``value`` is not one (whole-string match)."""
    match = _ROLE_ARN_RE.fullmatch(value)
    if match is None:
        return None
    return RoleArn(
        partition=match["partition"],
        account=match["account"],
        path=match["path"],
        name=match["name"],
    )


def check_allowlist(kind: AllowlistKind, entries: tuple[str, ...]) -> tuple[str, ...]:
    """Validate allow-list entries (settings); raises ``ValueError`` naming the bad entry.

    Each entry is an ARN glob of the right service (``arn:PARTITION:iam::ACCOUNT:role/...`` for
    roles; ``arn:...:ssm:...:parameter/...`` or ``arn:...:secretsmanager:...:secret:...`` for
    secrets), without whitespace, at most 2048 characters, using only the placeholders of
    :data:`ALLOWLIST_FIELDS`.
    """
    if len(entries) > MAX_ALLOWLIST_ENTRIES:
        raise ValueError(f"at most {MAX_ALLOWLIST_ENTRIES} entries, got {len(entries)}")
    shape = _ROLE_ENTRY_RE if kind == "role" else _SECRET_ENTRY_RE
    example = (
        "arn:aws:iam::{account}:role/oab/{namespace}/shared-exec"
        if kind == "role"
        else "arn:aws:ssm:{region}:{account}:parameter/oab/shared/{namespace}/*"
    )
    for entry in entries:
        if len(entry) > _ENTRY_MAX or shape.fullmatch(entry) is None:
            raise ValueError(
                f"{entry[:80]!r} is not a {kind} ARN glob; write e.g. {example}"
                + (" (no whitespace)" if any(c.isspace() for c in entry) else "")
            )
        try:
            entry.format(**dict.fromkeys(ALLOWLIST_FIELDS, "x"))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"{entry[:80]!r}: only "
                + ", ".join(f"{{{f}}}" for f in ALLOWLIST_FIELDS)
                + " may appear in braces"
            ) from exc
    return entries


def control_plane_prefix(key: str) -> str | None:
    """The control-plane prefix ``key`` (an object key of the control-plane bucket) is under."""
    return next((p for p in CONTROL_PLANE_PREFIXES if key.startswith(p)), None)


def config_from_refusal(uri: str, *, control_plane_bucket: str) -> Refusal | None:
    """Why ``uri`` (``s3://BUCKET/KEY``, a ``configFrom``) may not be read as an agent's
    config.toml: it is in the control-plane bucket, whose every object the controller owns."""
    if uri.removeprefix("s3://").partition("/")[0] != control_plane_bucket:
        return None
    return Refusal(
        f"{uri} is in the control-plane bucket, which the controller owns (it would hand this "
        "agent another agent's manifest or config)",
        "keep the config.toml in a bucket of your team (e.g. s3://TEAM-agent-config/NAMESPACE/"
        "NAME/config.toml), or use a local configFrom path, which oabctl apply uploads",
    )


def _mask_account(arn: str) -> str:
    # arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE -> the account segment as a literal '*', which
    # an equally masked glob matches whatever account either side named.
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn":
        parts[4] = "*"
    return ":".join(parts)


@dataclass(frozen=True, kw_only=True)
class TenantPolicy:
    """The platform team's rules for one control plane (built from the render context).

    ``account`` ``None`` means unknown: account segments are then not compared (see the module
    docstring). ``bucket`` is the control-plane bucket.
    """

    partition: str
    region: str
    account: str | None
    bucket: str
    role_allowlist: tuple[str, ...] = ()
    secret_allowlist: tuple[str, ...] = ()

    def _allowed(self, arn: str, entries: tuple[str, ...], namespace: str, name: str) -> bool:
        fields = {
            "partition": self.partition,
            "region": self.region,
            "account": self.account or "*",
            "namespace": namespace,
            "name": name,
        }
        candidate = arn if self.account is not None else _mask_account(arn)
        for entry in entries:
            glob = entry.format(**fields)
            if self.account is None:
                glob = _mask_account(glob)
            if fnmatchcase(candidate, glob):
                return True
        return False

    def role_refusal(
        self, role: str, *, own: str | None, slot: str, namespace: str, name: str
    ) -> Refusal | None:
        """Why ``role`` (a resolved role ARN or name) may not be this agent's ``slot`` role.

        ``own`` is what the settings' template yields for the agent in that slot (``None`` when
        that name is not a valid IAM role name, e.g. too long: then only the allow-list counts).
        """
        same = own is not None and role == own
        if not same and own is not None and self.account is None:
            same = _mask_account(role) == _mask_account(own)
        if same or self._allowed(role, self.role_allowlist, namespace, name):
            return None
        mine = f"this agent's own role ({own})" if own else "this agent's own role (it has none)"
        fix = f"remove the override to use {own}, or ask" if own else "ask"
        return Refusal(
            f"{slot} role {role} is neither {mine} nor allowed by the platform's role_allowlist",
            f"{fix} the platform team to add the role to role_allowlist (another agent's role "
            "would give this agent its secrets or its HOME)",
        )

    def secret_refusal(
        self, *, source: str, reference: str, namespace: str, name: str
    ) -> Refusal | None:
        """Why the ``source`` (``ssm``/``secretsmanager``) ``reference`` is outside the agent."""
        if source == "ssm":
            arn = (
                reference
                if reference.startswith("arn:")
                else f"arn:{self.partition}:ssm:{self.region}:{self.account or '*'}:parameter/"
                + reference.lstrip("/")
            )
            match = _SSM_ARN_RE.fullmatch(arn)
            own_prefix = agent_parameter_prefix(namespace, name)
            own_text = f"SSM parameters under {own_prefix}"
        else:
            match = _SM_ARN_RE.fullmatch(reference)
            own_prefix = agent_secret_prefix(namespace, name)
            own_text = f"Secrets Manager secrets named {own_prefix}..."
            arn = reference.split(":secret:", 1)[0] + ":secret:" + (match["name"] if match else "")
        if match is not None:
            same_place = match["partition"] == self.partition and match["region"] == self.region
            same_account = self.account is None or match["account"] in (self.account, "*")
            if same_place and same_account and match["name"].startswith(own_prefix):
                return None
        if match is not None and self._allowed(arn, self.secret_allowlist, namespace, name):
            return None
        where = f"in {self.region}" + (f", account {self.account}" if self.account else "")
        return Refusal(
            f"{reference} is not one of this agent's secrets ({own_text} {where}) and is not "
            "allowed by the platform's secret_allowlist",
            f"store the secret under {own_prefix} (the agent's execution role can read only "
            "those), or ask the platform team to add it to secret_allowlist",
        )

    def secret_ref_refusal(
        self, key: str, ref: str, *, namespace: str, name: str
    ) -> Refusal | None:
        """Why the config.toml's ``[secrets.refs] key = ref`` is outside the agent."""
        if ref.startswith("exec://"):
            return None
        secret_id, _, json_key = ref.removeprefix("aws-sm://").rpartition("#")
        if not ref.startswith("aws-sm://") or not secret_id or not json_key:
            return Refusal(
                f"[secrets.refs] {key} = {ref[:200]!r} is neither aws-sm://<secret-id>#<json-key> "
                "nor exec://<program>",
                "OpenAB refuses any other reference at start-up",
            )
        arn = (
            secret_id
            if secret_id.startswith("arn:")
            else f"arn:{self.partition}:secretsmanager:{self.region}:{self.account or '*'}:"
            f"secret:{secret_id}"
        )
        refusal = self.secret_refusal(
            source="secretsmanager", reference=arn, namespace=namespace, name=name
        )
        if refusal is None:
            return None
        return Refusal(
            f"[secrets.refs] {key}: {refusal.message}",
            refusal.hint + "; the task role must also be granted exactly this secret "
            "(ConfigSecretRefArns of ops/cloudformation/agent-roles.yaml)",
        )

    def bootstrap_refusal(self, uri: str) -> Refusal | None:
        """Why ``uri`` (``s3://BUCKET/KEY``) may not hold this agent's HOME archive."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if bucket != self.bucket:
            return None
        prefix = control_plane_prefix(key)
        if prefix is None:
            return None
        return Refusal(
            f"{uri} is under {prefix} of the control-plane bucket, which the controller owns "
            "(the snapshot sidecar would overwrite it)",
            "keep agent state in its own bucket (e.g. s3://TEAM-agent-state/NAMESPACE/NAME/"
            "home.tar.gz); the control-plane prefixes are " + ", ".join(CONTROL_PLANE_PREFIXES),
        )
