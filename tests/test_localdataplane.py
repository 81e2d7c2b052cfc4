"""The simulated ECS data plane, seen only through the ECS API and the control API.

One emulator with ``--dataplane`` for the module; each test resets it and pauses the background
thread, then moves time with ``step(advance_s=...)``, so nothing here sleeps and hopes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from oab.controller.local.dataplane import ControlRequestError, DataPlaneControl
from oab.controller.local.emulator import LOCAL_ENV, LocalAWS, start
from oab.controller.testing import wait_until

CLUSTER = "oab"
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:oab/discord-token-AbCdEf"
DELAY = 1.0


@pytest.fixture(scope="module")
def emulator() -> Iterator[LocalAWS]:
    with start(dataplane=True) as handle:
        yield handle


@dataclass
class Env:
    ecs: Any
    control: DataPlaneControl
    network: dict[str, Any]
    td1: str
    td2: str

    def create(self, name: str = "agent-a", **extra: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "cluster": CLUSTER,
            "serviceName": name,
            "taskDefinition": self.td1,
            "desiredCount": 1,
            "launchType": "FARGATE",
            "networkConfiguration": self.network,
            "deploymentConfiguration": {
                "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                "maximumPercent": 100,
                "minimumHealthyPercent": 0,
            },
            **extra,
        }
        service: dict[str, Any] = self.ecs.create_service(**kwargs)["service"]
        return service

    def describe(self, name: str = "agent-a") -> dict[str, Any]:
        service: dict[str, Any] = self.ecs.describe_services(cluster=CLUSTER, services=[name])[
            "services"
        ][0]
        return service

    def tasks(self, name: str = "agent-a", status: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"cluster": CLUSTER, "serviceName": name}
        if status:
            kwargs["desiredStatus"] = status
        arns = self.ecs.list_tasks(**kwargs)["taskArns"]
        if not arns:
            return []
        found: list[dict[str, Any]] = self.ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]
        return found

    def step(self, advance_s: float = DELAY) -> None:
        self.control.step(advance_s=advance_s)

    def deploy_ok(self, name: str = "agent-a") -> dict[str, Any]:
        """Create ``name`` and step until its first deployment completed."""
        self.create(name)
        self.step()
        service = self.describe(name)
        assert service["deployments"][0]["rolloutState"] == "COMPLETED"
        return service


@pytest.fixture
def env(emulator: LocalAWS) -> Iterator[Env]:
    """A reset account with network, cluster and two task definitions; the simulator paused.

    Afterwards the simulator must not have swallowed any error.
    """
    emulator.reset()
    control = DataPlaneControl(emulator.endpoint)
    control.configure(paused=True, start_delay_s=DELAY, circuit_breaker_threshold=3)
    session = boto3.Session(
        aws_access_key_id=LOCAL_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    ec2 = session.client("ec2", endpoint_url=emulator.endpoint)
    ecs = session.client("ecs", endpoint_url=emulator.endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="oab", Description="oab", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName=CLUSTER)

    def register(image: str) -> str:
        arn: str = ecs.register_task_definition(
            family="agent-a",
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            executionRoleArn="arn:aws:iam::123456789012:role/exec",
            containerDefinitions=[
                {
                    "name": "agent",
                    "image": image,
                    "essential": True,
                    "memory": 512,
                    "secrets": [{"name": "DISCORD_TOKEN", "valueFrom": SECRET_ARN}],
                }
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        return arn

    network = {
        "awsvpcConfiguration": {
            "subnets": [subnet],
            "securityGroups": [sg],
            "assignPublicIp": "DISABLED",
        }
    }
    yield Env(
        ecs=ecs, control=control, network=network, td1=register("agent:1"), td2=register("agent:2")
    )
    status = control.status()
    assert (status["errors"], status["last_error"]) == (0, None)


def test_create_service_deploys_after_the_start_delay(env: Env) -> None:
    created = env.create()
    first = created["deployments"]
    assert len(first) == 1
    assert first[0]["status"] == "PRIMARY"
    assert first[0]["rolloutState"] == "IN_PROGRESS"
    assert (first[0]["runningCount"], first[0]["pendingCount"]) == (0, 1)
    # What moto alone drops is echoed back, like ECS does.
    assert created["deploymentConfiguration"]["deploymentCircuitBreaker"] == {
        "enable": True,
        "rollback": True,
    }

    env.step(advance_s=DELAY / 2)  # not yet due
    assert env.describe()["deployments"][0]["rolloutState"] == "IN_PROGRESS"
    [pending] = env.tasks()
    assert pending["lastStatus"] == "PROVISIONING"

    env.step(advance_s=DELAY / 2)
    service = env.describe()
    [dep] = service["deployments"]
    assert dep["rolloutState"] == "COMPLETED"
    assert dep["rolloutStateReason"] == f"ECS deployment {dep['id']} completed."
    assert (service["runningCount"], service["pendingCount"]) == (1, 0)
    [task] = env.tasks()
    assert task["lastStatus"] == "RUNNING"
    assert task["desiredStatus"] == "RUNNING"
    assert task["taskDefinitionArn"] == env.td1
    assert task["group"] == "service:agent-a"
    assert task["startedBy"] == dep["id"]
    assert "startedAt" in task
    assert any("steady state" in e["message"] for e in service["events"])


def test_list_tasks_filters_by_service(env: Env) -> None:
    env.deploy_ok("agent-a")
    env.deploy_ok("agent-b")
    [a] = env.tasks("agent-a")
    [b] = env.tasks("agent-b")
    assert a["taskArn"] != b["taskArn"]
    assert a["group"] == "service:agent-a"


def test_new_task_definition_replaces_the_old_task(env: Env) -> None:
    env.deploy_ok()
    [old_task] = env.tasks()

    updated = env.ecs.update_service(cluster=CLUSTER, service="agent-a", taskDefinition=env.td2)[
        "service"
    ]
    primary, old = updated["deployments"]
    assert (primary["status"], primary["rolloutState"]) == ("PRIMARY", "IN_PROGRESS")
    assert (primary["taskDefinition"], primary["pendingCount"]) == (env.td2, 1)
    assert (old["status"], old["runningCount"], old["taskDefinition"]) == ("ACTIVE", 1, env.td1)
    assert updated["runningCount"] == 1

    env.step()
    service = env.describe()
    [dep] = service["deployments"]
    assert (dep["id"], dep["rolloutState"]) == (primary["id"], "COMPLETED")
    assert service["taskDefinition"] == env.td2
    [new_task] = env.tasks()
    assert new_task["taskDefinitionArn"] == env.td2
    [stopped] = env.ecs.describe_tasks(cluster=CLUSTER, tasks=[old_task["taskArn"]])["tasks"]
    assert stopped["lastStatus"] == "STOPPED"
    assert stopped["stopCode"] == "ServiceSchedulerInitiated"
    assert primary["id"] in stopped["stoppedReason"]
    assert [t["taskArn"] for t in env.tasks(status="STOPPED")] == [old_task["taskArn"]]


def test_force_new_deployment_starts_a_new_deployment(env: Env) -> None:
    first = env.deploy_ok()["deployments"][0]["id"]
    updated = env.ecs.update_service(cluster=CLUSTER, service="agent-a", forceNewDeployment=True)
    ids = [d["id"] for d in updated["service"]["deployments"]]
    assert len(ids) == 2
    assert ids[1] == first
    assert ids[0] != first

    env.step()
    [dep] = env.describe()["deployments"]
    assert (dep["id"], dep["rolloutState"], dep["runningCount"]) == (ids[0], "COMPLETED", 1)
    assert len(env.tasks()) == 1


def _trip_breaker(env: Env) -> None:
    for _ in range(3):
        # The running count never exceeds 1: the failing task never displaces the old one.
        assert env.describe()["runningCount"] == 1
        env.step()


def test_secret_injection_failure_rolls_back_and_keeps_the_old_task(env: Env) -> None:
    env.deploy_ok()
    [old_task] = env.tasks()
    env.control.fail_secret(SECRET_ARN.rsplit("-", 1)[0])  # prefix match, as rotated ARNs differ
    updated = env.ecs.update_service(cluster=CLUSTER, service="agent-a", taskDefinition=env.td2)
    failing_id = updated["service"]["deployments"][0]["id"]

    _trip_breaker(env)
    service = env.describe()
    by_id = {d["id"]: d for d in service["deployments"]}
    failed = by_id[failing_id]
    assert (failed["status"], failed["rolloutState"]) == ("ACTIVE", "FAILED")
    assert failed["rolloutStateReason"] == "ECS deployment circuit breaker: tasks failed to start."
    assert failed["failedTasks"] == 3
    rollback = service["deployments"][0]
    assert (rollback["status"], rollback["taskDefinition"]) == ("PRIMARY", env.td1)
    assert service["taskDefinition"] == env.td1
    [running] = env.tasks()
    assert running["taskArn"] == old_task["taskArn"]

    failures = env.tasks(status="STOPPED")
    assert len(failures) == 3
    for task in failures:
        assert task["stopCode"] == "TaskFailedToStart"
        assert task["stoppedReason"].startswith(
            "ResourceInitializationError: unable to pull secrets or registry auth"
        )
        assert SECRET_ARN in task["stoppedReason"]
        assert task["taskDefinitionArn"] == env.td2
    assert any(
        "deployment failed: tasks failed to start" in e["message"] for e in service["events"]
    )

    env.step()
    service = env.describe()
    assert service["deployments"][0]["rolloutState"] == "COMPLETED"
    assert service["runningCount"] == 1
    assert [t["taskArn"] for t in env.tasks()] == [old_task["taskArn"]]
    # The FAILED deployment lingers for pollers, then goes.
    env.control.configure(failed_deployment_linger_s=0)
    env.step()
    assert [d["rolloutState"] for d in env.describe()["deployments"]] == ["COMPLETED"]


def test_crash_loop_trips_the_breaker_with_exit_code_1(env: Env) -> None:
    env.deploy_ok()
    [old_task] = env.tasks()
    env.control.fail_service(CLUSTER, "agent-a", mode="crash-loop")
    env.ecs.update_service(cluster=CLUSTER, service="agent-a", forceNewDeployment=True)

    _trip_breaker(env)
    service = env.describe()
    assert [d["rolloutState"] for d in service["deployments"]] == ["IN_PROGRESS", "FAILED"]
    crashed = env.tasks(status="STOPPED")
    assert len(crashed) == 3
    for task in crashed:
        assert task["stopCode"] == "EssentialContainerExited"
        assert task["containers"][0]["exitCode"] == 1
        assert "startedAt" in task
    assert [t["taskArn"] for t in env.tasks()] == [old_task["taskArn"]]

    # Cleared fault: the next deployment succeeds.
    env.control.fail_service(CLUSTER, "agent-a", mode=None)
    env.ecs.update_service(cluster=CLUSTER, service="agent-a", forceNewDeployment=True)
    env.step()
    assert env.describe()["deployments"][0]["rolloutState"] == "COMPLETED"
    [task] = env.tasks()
    assert task["taskArn"] != old_task["taskArn"]


def test_first_deployment_failing_has_nothing_to_roll_back_to(env: Env) -> None:
    env.control.fail_service(CLUSTER, "agent-a", mode="secret-injection")
    env.create()
    for _ in range(4):
        env.step()
    service = env.describe()
    [dep] = service["deployments"]
    assert (dep["rolloutState"], dep["failedTasks"], dep["pendingCount"]) == ("FAILED", 3, 0)
    assert service["runningCount"] == 0


def test_scale_to_zero_and_delete_stop_tasks(env: Env) -> None:
    env.deploy_ok()
    [task] = env.tasks()
    env.ecs.update_service(cluster=CLUSTER, service="agent-a", desiredCount=0)
    env.step()
    service = env.describe()
    assert (service["runningCount"], service["pendingCount"]) == (0, 0)
    assert env.tasks() == []
    [stopped] = env.ecs.describe_tasks(cluster=CLUSTER, tasks=[task["taskArn"]])["tasks"]
    assert stopped["lastStatus"] == "STOPPED"

    env.ecs.update_service(cluster=CLUSTER, service="agent-a", desiredCount=1)
    env.step()
    [second] = env.tasks()
    env.ecs.delete_service(cluster=CLUSTER, service="agent-a", force=True)
    assert env.tasks() == []
    # The task the deleted service was running is stopped, not merely unlisted.
    [gone] = env.ecs.describe_tasks(cluster=CLUSTER, tasks=[second["taskArn"]])["tasks"]
    assert gone["lastStatus"] == "STOPPED"


def test_duplicate_create_is_refused_unless_same_client_token(env: Env) -> None:
    first = env.create(clientToken="tok-1")
    again = env.create(clientToken="tok-1")
    assert again["deployments"][0]["id"] == first["deployments"][0]["id"]
    with pytest.raises(ClientError) as err:
        env.create(clientToken="tok-2")
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"
    env.step()
    assert len(env.tasks()) == 1


def test_background_thread_completes_without_stepping(env: Env) -> None:
    env.control.configure(paused=False, start_delay_s=0.2, tick_s=0.05)
    env.create()
    wait_until(
        lambda: env.describe()["deployments"][0]["rolloutState"] == "COMPLETED",
        timeout=10,
        message="deployment completed by the background thread",
    )
    assert env.describe()["runningCount"] == 1


def test_control_api_rejects_bad_input_and_reset_clears_faults(env: Env) -> None:
    with pytest.raises(ControlRequestError) as err:
        env.control.configure(start_delay_s=-1)
    assert err.value.status == 400
    assert not err.value.retryable
    with pytest.raises(ControlRequestError):
        env.control.fail_service(CLUSTER, "agent-a", mode="bogus")  # type: ignore[arg-type]
    env.control.fail_service(CLUSTER, "agent-a", mode="crash-loop")
    assert env.control.status()["faults"]["services"]
    status = env.control.reset()
    assert status["faults"] == {"services": [], "secrets": []}
    assert status["errors"] == 0


def test_a_task_stopped_through_the_api_is_replaced(env: Env) -> None:
    env.deploy_ok()
    [task] = env.tasks()
    env.ecs.stop_task(cluster=CLUSTER, task=task["taskArn"], reason="chaos")
    env.step(advance_s=0)
    service = env.describe()
    assert (service["runningCount"], service["pendingCount"]) == (0, 1)
    env.step()
    [replacement] = env.tasks()
    assert replacement["taskArn"] != task["taskArn"]
    assert replacement["lastStatus"] == "RUNNING"
    [stopped] = env.ecs.describe_tasks(cluster=CLUSTER, tasks=[task["taskArn"]])["tasks"]
    assert (stopped["lastStatus"], stopped["stoppedReason"]) == ("STOPPED", "chaos")
