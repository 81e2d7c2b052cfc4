"""AWS client construction: the one place that builds boto3 sessions and clients.

Every client honours ``AWS_ENDPOINT_URL`` (boto3 reads it itself), so the same code talks to real
AWS and to the embedded local emulator. Clients are built once in the composition root and passed
down; nothing below this module calls ``boto3.client`` on its own.

The controller's table models (:mod:`oab.controller.adapters.models`) are bound here too, once, by
:func:`make_table_models`: to the table prefix and to a client of this factory, which does all
their requests (PynamoDB's own connection, with its own session, retries and no action log, is
never used).

Retries happen at one layer only: the clients built here use botocore's ``standard`` retry mode
with a small attempt budget, and callers do not wrap them in a second retry loop, except the
lease client, which gets no botocore retries at all and short timeouts (its caller owns the
retry budget, sized to the renew deadline).

Action log (opt-in, for proving IAM grants)
-------------------------------------------
With ``OAB_AWS_ACTION_LOG=/path`` in the environment a session is built with, every API call
made by any client of that session (clients are copied from the session's event hooks, so the
lease client and STS are included) appends one JSON line to that file *before* it is sent::

    {"principal": "oab-controller", "service": "dynamodb", "signing_name": "dynamodb",
     "operation": "Scan", "region": "us-east-1", "params": {"TableName": "oab-state"}}

``principal`` is the program whose composition root built the session (``oab-controller``,
``oabctl``, ``oab-agent``): on AWS each runs with its own role, so this is the IAM principal
that needs the grant. ``tests/test_iam_calls.py`` runs the real flows with the log on and fails
on any call the CloudFormation templates in ``ops/`` do not grant to that principal.

Invariants of the log:

- Only *names* are written: the parameters that say which resource a call touches (table,
  bucket and key, cluster, service, task definition family, roles passed, parameter and secret
  names, log group); never item data, object bodies, parameter or secret values, or container
  definitions. A value that still looks like a credential (``oab.controller.base.redact``) is
  written as ``[REDACTED]``.
- A call is logged once per API call (botocore retries are not repeated), including calls that
  then fail: an attempt needs the grant as much as a success does.
- A line is one ``write`` on an ``O_APPEND`` descriptor, so several processes and threads can
  share one file without interleaving. A failed write fails the call: a silently shortened log
  would let a missing grant pass unseen. The variable is never set in production.

Time model: none (no clock is read).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import boto3
from botocore.config import Config

from oab.controller.adapters.models import TableModels, bind_models
from oab.controller.base.names import TableNames
from oab.controller.base.redact import REDACTED, looks_like_secret

__all__ = [
    "ACTION_LOG_ENV",
    "ActionLog",
    "ClientOptions",
    "Principal",
    "make_client",
    "make_session",
    "make_table_models",
    "resource_params",
]

#: Environment variable naming the action log file (unset: no log, the production default).
ACTION_LOG_ENV: Final = "OAB_AWS_ACTION_LOG"

#: The programs that call AWS, each with its own IAM principal on AWS.
Principal = Literal["oab-controller", "oabctl", "oab-agent", "unknown"]

#: Request parameters that name what a call touches. Everything else (item data, bodies,
#: values, container definitions, tokens) is left out of the log.
_NAME_PARAMS: Final = frozenset(
    {
        # DynamoDB
        "TableName",
        "IndexName",
        # S3
        "Bucket",
        "Key",
        "VersionId",
        "Prefix",
        "CopySource",
        "Delete",  # DeleteObjects: the keys and versions, nothing else
        # ECS
        "cluster",
        "clusters",
        "clusterName",
        "service",
        "services",
        "serviceName",
        "taskDefinition",
        "family",
        "familyPrefix",
        "tasks",
        "resourceArn",
        "executionRoleArn",
        "taskRoleArn",
        # SSM, Secrets Manager
        "Name",
        "Names",
        "Path",
        "ParameterFilters",
        "SecretId",
        "Filters",
        # CloudWatch Logs
        "logGroupName",
        "logGroupIdentifier",
        "logGroupNamePrefix",
        "logStreamName",
        "logStreamNames",
        "logStreamNamePrefix",
        # IAM, STS
        "RoleName",
        "RoleArn",
        # Webhook ingress: API Gateway v2, Cloud Map, EC2
        "ApiId",
        "IntegrationId",
        "RouteId",
        "VpcLinkId",
        "Id",
        "NamespaceId",
        "Vpc",
        "GroupId",
        "GroupIds",
        "SubnetIds",
    }
)
#: Parameters whose size, not content, matters for the grant (tag-on-create needs TagResource).
_COUNTED_PARAMS: Final = frozenset({"tags", "Tags"})
#: Bound on one logged string: names are short; anything longer is not a name.
_MAX_VALUE_CHARS: Final = 1024


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """Timeouts and retry budget for one family of clients."""

    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    max_attempts: int = 3

    def to_botocore(self) -> Config:
        """The botocore ``Config`` these options describe."""
        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
        )


def _name_value(value: Any) -> Any:
    """A logged parameter value: strings bounded and never credential-shaped, nesting kept."""
    if isinstance(value, str):
        if looks_like_secret(value):
            return REDACTED
        return value[:_MAX_VALUE_CHARS]
    if isinstance(value, Mapping):
        return {str(k): _name_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_name_value(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return type(value).__name__


def resource_params(operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The names a call with ``params`` touches (see the module doc), as logged."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in _NAME_PARAMS:
            out[key] = _name_value(value)
        elif key in _COUNTED_PARAMS:
            out[key] = len(value) if isinstance(value, list | Mapping) else 0
    if operation in ("TransactWriteItems", "TransactGetItems"):
        # [{"Put": {"TableName": ...}}, ...] -> [{"Put": "table"}, ...]: the action per table.
        out["TransactItems"] = [
            {str(kind): _name_value(body.get("TableName")) for kind, body in item.items()}
            for item in params.get("TransactItems", [])
            if isinstance(item, Mapping)
        ]
    if operation in ("BatchGetItem", "BatchWriteItem"):
        out["RequestItems"] = sorted(_name_value(t) for t in params.get("RequestItems", {}))
    return out


class ActionLog:
    """Appends one JSON line per API call of a session's clients (see the module doc)."""

    def __init__(self, path: Path, *, principal: Principal) -> None:
        self.path = path
        self.principal = principal

    def install(self, session: boto3.Session) -> None:
        """Log every call made by clients that ``session`` builds from now on."""
        session.events.register("before-parameter-build", self._on_call)

    def _on_call(self, params: Mapping[str, Any], model: Any, context: Any, **_: Any) -> None:
        service = model.service_model
        record = {
            "principal": self.principal,
            "service": service.service_name,
            "signing_name": service.signing_name,
            "operation": model.name,
            "region": context.get("client_region") if isinstance(context, Mapping) else None,
            "params": resource_params(model.name, params),
        }
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def make_session(
    *,
    region: str | None = None,
    profile: str | None = None,
    principal: Principal = "unknown",
    env: Mapping[str, str] | None = None,
) -> boto3.Session:
    """A boto3 session from the standard credential chain.

    ``principal`` names the calling program for the opt-in action log, which is on when ``env``
    (default: the process environment) sets ``OAB_AWS_ACTION_LOG``.
    """
    session = boto3.Session(region_name=region, profile_name=profile)
    path = (os.environ if env is None else env).get(ACTION_LOG_ENV)
    if path:
        ActionLog(Path(path), principal=principal).install(session)
    return session


def make_client(
    session: boto3.Session,
    service: str,
    *,
    endpoint_url: str | None = None,
    options: ClientOptions | None = None,
    config: Config | None = None,
) -> Any:
    """Build a client for ``service``; ``endpoint_url`` overrides ``AWS_ENDPOINT_URL``.

    ``config`` replaces ``options`` with a complete botocore ``Config``, for a client whose
    retries another layer owns (the leader's lease client: ``ElectionConfig.botocore_config``).
    """
    kwargs: dict[str, Any] = {"config": config or (options or ClientOptions()).to_botocore()}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return session.client(service, **kwargs)


def make_table_models(
    session: boto3.Session,
    names: TableNames,
    *,
    endpoint_url: str | None = None,
    options: ClientOptions | None = None,
    client: Any = None,
) -> TableModels:
    """The controller's table models (:mod:`oab.controller.adapters.models`) bound once to
    ``names`` (the table prefix) and to the DynamoDB client's region and endpoint.

    The client is ``client`` when given (the composition root's), else one built here by
    :func:`make_client`; it does every request of the models (profile, action log, the one retry
    layer), PynamoDB's own connection never does.
    """
    ddb = (
        client
        if client is not None
        else make_client(session, "dynamodb", endpoint_url=endpoint_url, options=options)
    )
    return bind_models(ddb, names)
