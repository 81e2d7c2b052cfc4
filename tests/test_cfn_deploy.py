"""Deploy ops/cloudformation/control-plane.yaml into local AWS and run the controller on it.

The stack is created by moto's CloudFormation; then ``oabctl init`` pointed at the stack's
outputs must only *verify* what the stack made (creating nothing but the emulator's local
networking and the cluster profile object), and an in-process replica configured from the
outputs must bring one agent to Running.

What moto's CloudFormation does not apply (checked below, so a moto upgrade that fixes a gap
makes the test say so): the bucket's ``VersioningConfiguration`` and
``PublicAccessBlockConfiguration``, the tables' ``TimeToLiveSpecification`` and the cluster's
``CapacityProviders``. Against the emulator ``init`` therefore reports the bucket and the cluster
as ``updated`` (it enables TTL silently, so the tables read ``verified``); on AWS every line is
``verified``. Resource properties moto accepts but does not model (IAM
policies' effect, the bucket policy, PITR, container health checks, the service's deployment
configuration) are checked statically by tests/test_cfn_templates.py and test_iam_policies.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from oab.controller.adapters.state import read_runlog, read_status
from oab.controller.local.emulator import LocalAWS
from oab.controller.testing import (
    agent_manifest,
    oabctl,
    prepare_plane,
    replica_settings,
    running_replica,
    wait_until,
)

TEMPLATE = Path(__file__).resolve().parent.parent / "ops" / "cloudformation" / "control-plane.yaml"
BUCKET = "acme-oab-control-plane"
PREFIX = "acme"

#: ``init`` steps the emulator's CloudFormation leaves for ``init`` to fix (see the module doc).
MOTO_GAPS = {
    f"bucket/{BUCKET}": "updated (versioning, public access blocked)",
    "cluster/acme-cluster": "updated (added FARGATE, FARGATE_SPOT)",
}
#: What ``init`` may create against a stack: the emulator's networking, the profile object.
MAY_CREATE = ("vpc/", "subnet/", "securitygroup/", "object/config/cluster.json")


def _steps(text: str) -> dict[str, str]:
    """``init`` lines -> {resource: "action (detail)"}."""
    steps: dict[str, str] = {}
    for line in text.splitlines():
        resource, _, rest = line.partition(" ")
        steps[resource] = rest
    return steps


def _deploy(session: boto3.Session, endpoint: str) -> dict[str, str]:
    ec2 = session.client("ec2", endpoint_url=endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="ctl", Description="egress only", VpcId=vpc)
    cfn = session.client("cloudformation", endpoint_url=endpoint)
    cfn.create_stack(
        StackName="oab-control-plane",
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[
            {"ParameterKey": "Prefix", "ParameterValue": PREFIX},
            {"ParameterKey": "BucketName", "ParameterValue": BUCKET},
            {"ParameterKey": "ControllerImage", "ParameterValue": "oab-controller@sha256:0"},
            {"ParameterKey": "Subnets", "ParameterValue": subnet},
            {"ParameterKey": "SecurityGroups", "ParameterValue": sg["GroupId"]},
        ],
    )
    stack: dict[str, Any] = wait_until(
        lambda: (
            (s := cfn.describe_stacks(StackName="oab-control-plane")["Stacks"][0])
            and not s["StackStatus"].endswith("IN_PROGRESS")
            and s
        ),
        timeout=60,
        interval=0.2,
        message="stack created",
    )
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


@pytest.mark.slow
def test_controller_runs_on_the_resources_the_stack_created(
    local_aws: LocalAWS, tmp_path: Path
) -> None:
    plane = prepare_plane(
        local_aws,
        config=tmp_path / "none",
        bucket=BUCKET,
        extra={"OAB_TABLE_PREFIX": PREFIX},
        reset=True,
    )
    session = boto3.Session(region_name="us-east-1")
    outputs = _deploy(session, local_aws.endpoint)
    assert outputs["BucketName"] == BUCKET
    assert outputs["TablePrefix"] == PREFIX
    cluster = outputs["ClusterName"]

    ddb = session.client("dynamodb", endpoint_url=local_aws.endpoint)
    tables = {t: ddb.describe_table(TableName=f"{PREFIX}-{t}")["Table"] for t in
              ("lease", "queue", "state", "runlog")}  # fmt: skip
    assert all(t["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST" for t in tables.values())
    assert all(t["DeletionProtectionEnabled"] for t in tables.values())
    assert [i["IndexName"] for i in tables["queue"]["GlobalSecondaryIndexes"]] == ["ready-index"]
    assert [i["IndexName"] for i in tables["runlog"]["GlobalSecondaryIndexes"]] == ["run-index"]
    ecs = session.client("ecs", endpoint_url=local_aws.endpoint)
    [controller] = ecs.describe_services(cluster=cluster, services=[f"{PREFIX}-controller"])[
        "services"
    ]
    assert controller["desiredCount"] == 3

    env = {**os.environ, **plane, "OAB_CLUSTER": cluster}
    code, out, err = oabctl("init", env=env)
    assert code == 0, err
    steps = _steps(out)
    created = [r for r, s in steps.items() if s.startswith("created")]
    assert all(r.startswith(MAY_CREATE) for r in created), created
    assert not any(r.startswith(("bucket/", "table/", "cluster/")) for r in created)
    changed = {r: s for r, s in steps.items() if s.startswith("updated")}
    assert changed == {r: s for r, s in MOTO_GAPS.items() if r in changed}, changed
    for name in tables:
        ttl = ddb.describe_time_to_live(TableName=f"{PREFIX}-{name}")["TimeToLiveDescription"]
        assert ttl["TimeToLiveStatus"] in ("ENABLED", "ENABLING"), (name, ttl)
    # Once the gaps are filled, init is a pure verification.
    again = _steps(oabctl("init", env=env)[1])
    assert all(s.startswith("verified") for s in again.values()), again

    session.client("ssm", endpoint_url=local_aws.endpoint).put_parameter(
        Name="/oab/team/bot/discord-token", Value="planted-value", Type="SecureString"
    )
    settings = replica_settings(
        local_aws.endpoint,
        bucket=outputs["BucketName"],
        table_prefix=outputs["TablePrefix"],
        cluster=cluster,
    )
    with running_replica(settings):
        assert oabctl("apply", "-f", "-", stdin=agent_manifest(), env=env)[0] == 0
        status = wait_until(
            lambda: (s := read_status(ddb, f"{PREFIX}-state", "team/bot")).phase == "Running" and s,
            timeout=60,
            message="agent Running on the stack's resources",
        )
        assert status.service_arn.split("/")[-2] == cluster
        assert read_runlog(ddb, f"{PREFIX}-runlog", "team/bot")
        lease = ddb.scan(TableName=f"{PREFIX}-lease")["Items"]
        assert [i["holder"]["S"] for i in lease if "holder" in i] == ["r1"]
