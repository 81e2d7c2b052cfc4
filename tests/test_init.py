"""``oabctl init``: creates everything once, verifies it afterwards, never weakens it."""

from __future__ import annotations

from oab.controller.adapters.clusterprofile import read_cluster_profile
from oab.controller.cli.init import init
from oab.controller.core.settings import Settings
from oab.controller.testing import AWS, FakeClock


def _run(aws: AWS, settings: Settings) -> list[str]:
    report = init(
        settings,
        s3=aws.client("s3"),
        dynamodb=aws.client("dynamodb"),
        ecs=aws.client("ecs"),
        ec2=aws.client("ec2"),
        sts=aws.client("sts"),
        wall_clock=FakeClock().time,
    )
    return [step.line() for step in report.steps]


def test_init_creates_then_verifies(aws: AWS) -> None:
    settings = Settings(endpoint=aws.emulator.endpoint)
    first = _run(aws, settings)
    assert (
        first[0] == "bucket/oab-control-plane created (versioning, SSE-S3, public access blocked)"
    )
    assert "cluster/oab created (FARGATE, FARGATE_SPOT)" in first
    assert any(line.startswith("subnet/") and "created" in line for line in first)
    second = _run(aws, settings)
    assert all(" verified" in line for line in second), second

    s3 = aws.client("s3")
    assert s3.get_bucket_versioning(Bucket="oab-control-plane")["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket="oab-control-plane")[
        "ServerSideEncryptionConfiguration"
    ]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket="oab-control-plane")
    assert all(block["PublicAccessBlockConfiguration"].values())
    cluster = aws.client("ecs").describe_clusters(clusters=["oab"])["clusters"][0]
    assert set(cluster["capacityProviders"]) == {"FARGATE", "FARGATE_SPOT"}

    profile = read_cluster_profile(s3, "oab-control-plane")
    assert profile is not None
    assert profile.account == "123456789012"
    ec2 = aws.client("ec2")
    assert ec2.describe_subnets(SubnetIds=list(profile.subnets))["Subnets"]
    assert ec2.describe_security_groups(GroupIds=list(profile.security_groups))["SecurityGroups"]


def test_init_repairs_a_bucket_without_versioning(aws: AWS) -> None:
    aws.client("s3").create_bucket(Bucket="oab-control-plane")
    lines = _run(aws, Settings(endpoint=aws.emulator.endpoint))
    assert (
        lines[0] == "bucket/oab-control-plane updated (versioning, SSE-S3, public access blocked)"
    )


def test_configured_networking_wins_over_local_creation(aws: AWS) -> None:
    settings = Settings(
        endpoint=aws.emulator.endpoint, subnets=("subnet-given",), security_groups=("sg-given",)
    )
    lines = _run(aws, settings)
    assert not any(line.startswith(("vpc/", "subnet/")) for line in lines)
    profile = read_cluster_profile(aws.client("s3"), "oab-control-plane")
    assert profile is not None
    assert (profile.subnets, profile.security_groups) == (("subnet-given",), ("sg-given",))
