"""``oabctl init``: create or verify everything the control plane needs, idempotently.

Design
------
Each step reads first and changes only what is missing or wrong, then reports one
:class:`Step` (``created`` | ``updated`` | ``verified``), so running ``init`` twice is safe and
its second run prints only ``verified`` lines:

1. the control-plane bucket: versioning enabled, default encryption (SSE-S3), all public access
   blocked;
2. the four DynamoDB tables (``oab.controller.adapters.tables.ensure_tables``: keys, GSIs, TTL);
3. the ECS cluster with the ``FARGATE`` and ``FARGATE_SPOT`` capacity providers (default
   strategy FARGATE);
4. default networking for agents. Settings' ``subnets``/``security_groups`` win. Against the
   local emulator with none given, ``init`` creates a VPC (DNS hostnames on, which moto's
   ``run_task`` needs), one subnet and one security group tagged ``oab:local``, because moto's
   ``CreateService`` validates them against its EC2. On real AWS with none given, nothing is
   invented: manifests must then name their own networking;
5. the cluster profile ``config/cluster.json`` in the bucket: cluster, region, account, table
   prefix, default subnets and security groups. The controller and ``oabctl render`` read it
   (:mod:`oab.controller.core.clusterprofile`) to fill what a manifest leaves out, so every replica
   and every operator sees the same defaults without sharing a settings file.

Invariants: ``init`` never deletes or weakens anything it finds (it only adds versioning,
encryption, the public access block and capacity providers); it holds no secret.

Time model: the only clock reading is the ``updatedAt`` stamp of the cluster profile (injected
wall clock, display only).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from oab.controller.adapters.clusterprofile import read_cluster_profile, write_cluster_profile
from oab.controller.adapters.tables import ensure_tables
from oab.controller.base.errors import OabError, classify_aws
from oab.controller.base.names import CLUSTER_PROFILE_KEY, LOCAL_TAG
from oab.controller.cli.context import Context
from oab.controller.cli.registry import EXIT_OK, Command, command
from oab.controller.core.clusterprofile import ClusterProfile
from oab.controller.core.settings import Settings

__all__ = ["COMMANDS", "InitError", "InitReport", "Step", "init", "init_command"]

CAPACITY_PROVIDERS = ("FARGATE", "FARGATE_SPOT")

Action = Literal["created", "updated", "verified"]


class InitError(OabError):
    """A step of ``init`` failed; carries the AWS error code (retryable per the code)."""

    reason = "InitError"

    def __init__(self, message: str, *, code: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@dataclass(frozen=True)
class Step:
    """One resource ``init`` looked at and what it did."""

    resource: str
    action: Action
    detail: str = ""

    def line(self) -> str:
        """``bucket/oab-control-plane created (versioning, SSE-S3, public access blocked)``."""
        return f"{self.resource} {self.action}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class InitReport:
    """Everything ``init`` did, in order, plus the resulting cluster profile."""

    steps: list[Step] = field(default_factory=list)
    profile: ClusterProfile | None = None


def _wrap(what: str, exc: Exception) -> InitError:
    aws = classify_aws(exc, operation=what)
    return InitError(str(aws), code=aws.code, retryable=aws.retryable)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _ensure_bucket(s3: Any, bucket: str, region: str) -> Step:
    created = False
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            s3.create_bucket(**kwargs)
            created = True
        except ClientError as again:
            if _code(again) != "BucketAlreadyOwnedByYou":
                raise
    changed: list[str] = []
    if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        changed.append("versioning")
    try:
        s3.get_bucket_encryption(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
        changed.append("SSE-S3")
    block = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    try:
        current = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if _code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        current = {}
    if any(not current.get(k) for k in block):
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
        changed.append("public access blocked")
    action: Action = "created" if created else ("updated" if changed else "verified")
    detail = "versioning, SSE-S3, public access blocked" if created else ", ".join(changed)
    return Step(f"bucket/{bucket}", action, detail)


def _ensure_cluster(ecs: Any, cluster: str) -> Step:
    found = ecs.describe_clusters(clusters=[cluster]).get("clusters", [])
    live = [c for c in found if c.get("status") == "ACTIVE"]
    strategy = [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}]
    if not live:
        ecs.create_cluster(
            clusterName=cluster,
            capacityProviders=list(CAPACITY_PROVIDERS),
            defaultCapacityProviderStrategy=strategy,
        )
        return Step(f"cluster/{cluster}", "created", "FARGATE, FARGATE_SPOT")
    have = set(live[0].get("capacityProviders") or [])
    if not set(CAPACITY_PROVIDERS) <= have:
        ecs.put_cluster_capacity_providers(
            cluster=cluster,
            capacityProviders=sorted(have | set(CAPACITY_PROVIDERS)),
            defaultCapacityProviderStrategy=live[0].get("defaultCapacityProviderStrategy")
            or strategy,
        )
        return Step(f"cluster/{cluster}", "updated", "added FARGATE, FARGATE_SPOT")
    return Step(f"cluster/{cluster}", "verified", "FARGATE, FARGATE_SPOT")


def _tagged(ec2: Any, kind: str, cluster: str) -> list[dict[str, Any]]:
    flt = [{"Name": f"tag:{LOCAL_TAG}", "Values": [cluster]}]
    if kind == "vpc":
        result: list[dict[str, Any]] = ec2.describe_vpcs(Filters=flt)["Vpcs"]
    elif kind == "subnet":
        result = ec2.describe_subnets(Filters=flt)["Subnets"]
    else:
        result = ec2.describe_security_groups(Filters=flt)["SecurityGroups"]
    return result


def _ensure_local_network(ec2: Any, cluster: str) -> tuple[list[Step], list[str], list[str]]:
    tags = [{"Key": LOCAL_TAG, "Value": cluster}, {"Key": "Name", "Value": f"oab-{cluster}"}]
    steps: list[Step] = []
    vpcs = _tagged(ec2, "vpc", cluster)
    if vpcs:
        vpc_id = vpcs[0]["VpcId"]
        steps.append(Step(f"vpc/{vpc_id}", "verified"))
    else:
        vpc_id = ec2.create_vpc(
            CidrBlock="10.42.0.0/16",
            TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}],
        )["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsSupport={"Value": True})
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
        steps.append(Step(f"vpc/{vpc_id}", "created", "local emulator networking"))
    subnets = _tagged(ec2, "subnet", cluster)
    if subnets:
        subnet_id = subnets[0]["SubnetId"]
        steps.append(Step(f"subnet/{subnet_id}", "verified"))
    else:
        subnet_id = ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock="10.42.1.0/24",
            TagSpecifications=[{"ResourceType": "subnet", "Tags": tags}],
        )["Subnet"]["SubnetId"]
        steps.append(Step(f"subnet/{subnet_id}", "created"))
    groups = _tagged(ec2, "sg", cluster)
    if groups:
        sg_id = groups[0]["GroupId"]
        steps.append(Step(f"securitygroup/{sg_id}", "verified"))
    else:
        sg_id = ec2.create_security_group(
            GroupName=f"oab-{cluster}-agents",
            Description="OpenAB agents: outbound only (no inbound rules)",
            VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
        )["GroupId"]
        steps.append(Step(f"securitygroup/{sg_id}", "created"))
    return steps, [subnet_id], [sg_id]


def init(
    settings: Settings,
    *,
    s3: Any,
    dynamodb: Any,
    ecs: Any,
    ec2: Any,
    sts: Any,
    wall_clock: Callable[[], float] = time.time,
    progress: Callable[[str], None] = lambda _msg: None,
) -> InitReport:
    """Create or verify the control plane for ``settings`` (see the module doc for the steps)."""
    report = InitReport()
    step = "s3"
    try:
        progress(f"checking bucket {settings.bucket} ...")
        report.steps.append(_ensure_bucket(s3, settings.bucket, settings.region))
        step = "dynamodb"
        progress("checking tables ...")
        for name, state in ensure_tables(dynamodb, settings.tables).items():
            action: Action = "created" if state == "created" else "verified"
            report.steps.append(Step(f"table/{name}", action, "TTL on expires_at"))
        step = "ecs"
        progress(f"checking cluster {settings.cluster} ...")
        report.steps.append(_ensure_cluster(ecs, settings.cluster))
        step = "ec2"
        subnets, groups = list(settings.subnets), list(settings.security_groups)
        if settings.is_local and not (subnets and groups):
            progress("checking local networking ...")
            net_steps, local_subnets, local_groups = _ensure_local_network(ec2, settings.cluster)
            report.steps.extend(net_steps)
            subnets = subnets or local_subnets
            groups = groups or local_groups
        step = "sts"
        account = settings.account or str(sts.get_caller_identity()["Account"])
        step = "s3"
        profile = ClusterProfile(
            cluster=settings.cluster,
            region=settings.region,
            account=account,
            table_prefix=settings.table_prefix,
            subnets=tuple(subnets),
            security_groups=tuple(groups),
        )
        stored = read_cluster_profile(s3, settings.bucket)
        same = stored is not None and {**stored.to_json(), "updatedAt": ""} == profile.to_json()
        if same and stored is not None:
            report.steps.append(Step(f"object/{CLUSTER_PROFILE_KEY}", "verified"))
            report.profile = stored
        else:
            stamped = ClusterProfile(
                **{**profile.__dict__, "updated_at": _iso(wall_clock())},
            )
            write_cluster_profile(s3, settings.bucket, stamped)
            action = "created" if stored is None else "updated"
            report.steps.append(Step(f"object/{CLUSTER_PROFILE_KEY}", action))
            report.profile = stamped
    except (ClientError, BotoCoreError) as exc:
        raise _wrap(f"init ({step})", exc) from exc
    return report


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------ the command


def init_command(ctx: Context) -> int:
    """``oabctl init``: run :func:`init` with the context's settings and clients; one line per
    step on stdout."""
    report = init(
        ctx.settings,
        s3=ctx.client("s3"),
        dynamodb=ctx.client("dynamodb"),
        ecs=ctx.client("ecs"),
        ec2=ctx.client("ec2"),
        sts=ctx.client("sts"),
        wall_clock=ctx.wall_clock,
        progress=ctx.progress,
    )
    for step in report.steps:
        ctx.print(step.line())
    return EXIT_OK


#: This group's commands, in the order ``oabctl --help`` lists them (sorted there by name).
COMMANDS: tuple[Command, ...] = (
    # init_command stays a function: ``oabctl local up`` runs it after starting the emulator.
    command("init", help="create or verify the bucket, tables and ECS cluster (idempotent)")(
        init_command
    ),
)
