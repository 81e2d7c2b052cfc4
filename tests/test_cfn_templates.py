"""CloudFormation templates: cfn-lint, agreement with the code, and a deploy into the emulator."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from oab.controller.adapters import tables
from oab.controller.base import names
from oab.controller.testing import AWS

ROOT = Path(__file__).resolve().parent.parent
CFN = ROOT / "ops" / "cloudformation"
TEMPLATES = sorted(CFN.glob("*.yaml"))
CFN_LINT = shutil.which("cfn-lint", path=str(Path(sys.executable).parent))


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _tag)


def _template(name: str) -> dict[str, Any]:
    data = yaml.load((CFN / name).read_text(), Loader=_Loader)
    assert isinstance(data, dict)
    return data


@pytest.mark.skipif(CFN_LINT is None, reason="cfn-lint not installed (pip install cfn-lint)")
@pytest.mark.parametrize("path", TEMPLATES, ids=[p.name for p in TEMPLATES])
def test_cfn_lint_is_clean(path: Path) -> None:
    assert CFN_LINT is not None
    result = subprocess.run([CFN_LINT, str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _norm_table(props: dict[str, Any]) -> dict[str, Any]:
    """The parts of a table both the template and ``tables.table_definitions`` spell out."""
    gsis = {
        g["IndexName"]: (
            [(k["AttributeName"], k["KeyType"]) for k in g["KeySchema"]],
            g["Projection"]["ProjectionType"],
        )
        for g in props.get("GlobalSecondaryIndexes", [])
    }
    return {
        "billing": props["BillingMode"],
        "attributes": sorted(
            (a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]
        ),
        "keys": [(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]],
        "gsis": gsis,
    }


def test_tables_match_the_code_and_are_protected() -> None:
    resources = _template("control-plane.yaml")["Resources"]
    in_template = {
        res["Properties"]["TableName"]["Fn::Sub"].replace("${Prefix}", "oab"): res["Properties"]
        for res in resources.values()
        if res["Type"] == "AWS::DynamoDB::Table"
    }
    expected = tables.table_definitions(names.TableNames.with_prefix("oab"))
    assert set(in_template) == set(expected)
    for name, props in in_template.items():
        assert _norm_table(props) == _norm_table(expected[name]), name
        assert props["DeletionProtectionEnabled"] is True
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["TimeToLiveSpecification"] == {
            "AttributeName": names.TTL_ATTRIBUTE,
            "Enabled": True,
        }


def test_bucket_cluster_and_service_settings() -> None:
    res = _template("control-plane.yaml")["Resources"]
    bucket = res["ControlPlaneBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    [deny] = res["ControlPlaneBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert res["Cluster"]["Properties"]["CapacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    service = res["ControllerService"]["Properties"]
    assert service["DesiredCount"] == {"Ref": "DesiredCount"}
    assert _template("control-plane.yaml")["Parameters"]["DesiredCount"]["Default"] == 3
    assert service["DeploymentConfiguration"]["MinimumHealthyPercent"] == 100
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"]["Rollback"] is True
    [container] = res["ControllerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert container["StopTimeout"] == 120
    assert container["HealthCheck"]["Command"][0] == "CMD"
    assert res["ControllerLogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def _deploy(aws: AWS, prefix: str, bucket: str) -> dict[str, str]:
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)["Subnet"][
            "SubnetId"
        ]
        for i, az in enumerate(("us-east-1a", "us-east-1b", "us-east-1c"))
    ]
    sg = ec2.create_security_group(GroupName="oab", Description="egress only", VpcId=vpc)
    cfn = aws.client("cloudformation")
    cfn.create_stack(
        StackName="oab-control-plane",
        TemplateBody=(CFN / "control-plane.yaml").read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[
            {"ParameterKey": "Prefix", "ParameterValue": prefix},
            {"ParameterKey": "BucketName", "ParameterValue": bucket},
            {"ParameterKey": "ControllerImage", "ParameterValue": "oab-controller:test"},
            {"ParameterKey": "Subnets", "ParameterValue": ",".join(subnets)},
            {"ParameterKey": "SecurityGroups", "ParameterValue": sg["GroupId"]},
        ],
    )
    [stack] = cfn.describe_stacks(StackName="oab-control-plane")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


@pytest.mark.slow
def test_deploy_into_the_emulator_creates_what_the_controller_uses(aws: AWS) -> None:
    # A prefix other than the fixture's, so the stack creates its own tables.
    prefix = "oabcfn"
    outputs = _deploy(aws, prefix, "oab-cfn-control-plane")
    assert outputs["BucketName"] == "oab-cfn-control-plane"
    assert outputs["TablePrefix"] == prefix
    table_names = names.TableNames.with_prefix(outputs["TablePrefix"])
    expected = tables.table_definitions(table_names)
    ddb = aws.client("dynamodb")
    for name in table_names.all():
        table = ddb.describe_table(TableName=name)["Table"]
        assert _norm_table({**table, "BillingMode": "PAY_PER_REQUEST"}) == _norm_table(
            expected[name]
        )
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert table["DeletionProtectionEnabled"] is True
    # The controller's own idempotent set-up accepts the stack's tables as they are.
    assert set(tables.ensure_tables(ddb, table_names).values()) == {"exists"}
    s3 = aws.client("s3")
    s3.head_bucket(Bucket=outputs["BucketName"])
    ecs = aws.client("ecs")
    [cluster] = ecs.describe_clusters(clusters=[outputs["ClusterName"]])["clusters"]
    assert cluster["status"] == "ACTIVE"
    [service] = ecs.describe_services(
        cluster=outputs["ClusterName"], services=[f"{prefix}-controller"]
    )["services"]
    assert service["desiredCount"] == 3
    task_def = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
    [container] = task_def["taskDefinition"]["containerDefinitions"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["OAB_BUCKET"] == outputs["BucketName"]
    assert env["OAB_TABLE_PREFIX"] == prefix
    assert env["OAB_CLUSTER"] == outputs["ClusterName"]
    # moto's CloudFormation drops TaskRoleArn, PITR, TTL, versioning and the public access block
    # (measured); the static tests above check those properties in the template itself.
    iam = aws.client("iam")
    assert iam.list_role_policies(RoleName=f"{prefix}-controller-task")["PolicyNames"] == [
        "controller"
    ]
    logs = aws.client("logs")
    groups = logs.describe_log_groups(logGroupNamePrefix=f"/{prefix}/")["logGroups"]
    assert [g["logGroupName"] for g in groups] == [f"/{prefix}/controller"]
    assert groups[0]["retentionInDays"] == 30


@pytest.mark.slow
def test_agent_roles_stack_deploys(aws: AWS) -> None:
    cfn = aws.client("cloudformation")
    cfn.create_stack(
        StackName="oab-agent-team-bot",
        TemplateBody=(CFN / "agent-roles.yaml").read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[
            {"ParameterKey": "Namespace", "ParameterValue": "team"},
            {"ParameterKey": "Name", "ParameterValue": "bot"},
            {"ParameterKey": "ControlPlaneBucket", "ParameterValue": "cp"},
            {"ParameterKey": "BootstrapBucket", "ParameterValue": "state"},
            {"ParameterKey": "BootstrapKey", "ParameterValue": "team/bot/home.tar.gz"},
        ],
    )
    [stack] = cfn.describe_stacks(StackName="oab-agent-team-bot")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["ExecutionRoleArn"].endswith(":role/oab-agent-exec-team-bot")
    assert outputs["TaskRoleArn"].endswith(":role/oab-agent-task-team-bot")


def test_the_controller_writes_only_to_its_task_volume() -> None:
    """A read-only root filesystem needs a writable mount for the health file (issue 11, Low)."""
    props = _template("control-plane.yaml")["Resources"]["ControllerTaskDefinition"]["Properties"]
    [container] = props["ContainerDefinitions"]
    assert container["ReadonlyRootFilesystem"] is True
    [volume] = props["Volumes"]
    assert set(volume) == {"Name"}  # a Fargate bind mount: task storage, gone with the task
    [mount] = container["MountPoints"]
    assert mount["SourceVolume"] == volume["Name"]
    assert mount["ReadOnly"] is False
    root = Path(mount["ContainerPath"])
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert Path(env["OAB_HEALTH_FILE"]).parent == root
    assert Path(env["TMPDIR"]) == root
    assert env["OAB_TRACE_FILE"] == "off"  # spans go to OTLP, never to the image's HOME
    # The healthcheck reads the same file the daemon writes: both take OAB_HEALTH_FILE from here.
    assert container["HealthCheck"]["Command"] == ["CMD", "oab-controller", "healthcheck"]
