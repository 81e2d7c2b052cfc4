"""End to end: three real `oab-controller run` processes on local AWS with its simulated ECS.

One scenario, in order (each step builds on the previous one's state, so they share one test):
apply 50 agents -> SIGKILL the leader midway -> all Available; change 10 -> one new task definition
revision each; delete 5 -> fully cleaned up; restart one (new deployment, same revision); roll one
back to generation 1 (a new generation with generation 1's spec); a secret-injection fault on one
agent ends Failed + SecretInjectionFailed while its old task keeps running. Then the invariants over
the whole run: gap-free audit sequences whose rows chain phase to phase, exactly one CreateService
per agent (made, or adopted after the run that made it was killed), and no planted secret value
in status, run log, replica logs, artifacts or task definitions.

Nothing of the project is mocked: the CLI runs in-process as a user would run it, the replicas are
subprocesses (``oab.controller.local.cluster``), every check reads the emulator's DynamoDB, S3 and
ECS.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from oab.controller import testing
from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.state import read_runlog
from oab.controller.adapters.store import Desired, DesiredStateStore
from oab.controller.base.names import RESTART_ANNOTATION, TableNames
from oab.controller.cli import main
from oab.controller.core import render
from oab.controller.core.status import AgentStatus, AuditRecord, iso
from oab.controller.local.cluster import ClusterConfig, LocalCluster
from oab.controller.local.dataplane import DataPlaneControl
from oab.controller.local.emulator import LOCAL_ENV, LocalAWS, start
from oab.controller.testing import agent_manifest, all_statuses, available_at, wait_until

pytestmark = pytest.mark.slow

NS = "e2e"
AGENTS = [f"agent-{i:02d}" for i in range(50)]
CHANGED = AGENTS[:10]
DELETED = AGENTS[45:]
RESTARTED = AGENTS[10]
ROLLED_BACK = AGENTS[0]
FAULTY = AGENTS[20]
BUCKET = "oab-e2e-plane"
TABLES = TableNames()

SM_SECRET = """\
    - name: KIRO_API_KEY
      source: secretsmanager
      arn: {arn}
"""


@dataclass
class Plant:
    """The secret values planted in SSM / Secrets Manager, searched for everywhere at the end."""

    values: list[str] = field(default_factory=list)
    sm_arns: dict[str, str] = field(default_factory=dict)


@dataclass
class Env:
    emulator: LocalAWS
    env: dict[str, str]
    cluster: LocalCluster
    ddb: Any
    s3: Any
    ecs: Any
    plant: Plant
    workdir: Path

    def oabctl(self, *argv: str) -> str:
        run = testing.oabctl(*argv, env=self.env)
        assert run.code == 0, f"oabctl {' '.join(argv)} -> {run.code}: {run.err}"
        return run.out

    def store(self) -> DesiredStateStore:
        return DesiredStateStore(
            S3ObjectStore(self.s3, BUCKET), changes=ChangeLog(self.ddb, TABLES.state)
        )

    def statuses(self) -> dict[str, AgentStatus]:
        """Every agent status item, by key (one paginated Scan)."""
        return all_statuses(self.ddb, TABLES.state)

    def runlog(self, name: str) -> list[AuditRecord]:
        return read_runlog(self.ddb, TABLES.runlog, f"{NS}/{name}", newest_first=False)

    def active_revisions(self, name: str) -> list[str]:
        arns: list[str] = self.ecs.list_task_definitions(
            familyPrefix=render.family(NS, name), status="ACTIVE"
        )["taskDefinitionArns"]
        return [a for a in arns if a.rsplit("/", 1)[1].rsplit(":", 1)[0] == render.family(NS, name)]

    def registered(self, name: str) -> dict[int, list[str]]:
        """Revisions this agent's runs registered (audit log), by the generation they carry.

        The generation is read from the revision itself (its ``CONFIG_ARTIFACT_PATH`` names the
        generation's artifact), not from the audit row, which holds the claim's generation.
        """
        out: dict[int, list[str]] = {}
        for row in self.runlog(name):
            for call in row.calls:
                if call.action != "ecs:RegisterTaskDefinition":
                    continue
                td = self.ecs.describe_task_definition(taskDefinition=call.result)
                env = {
                    v["name"]: v["value"]
                    for c in td["taskDefinition"]["containerDefinitions"]
                    for v in c.get("environment", [])
                }
                # .../artifacts/{ns}/{name}/{generation}/{digest}/config.toml
                generation = int(env["CONFIG_ARTIFACT_PATH"].rsplit("/", 3)[1])
                out.setdefault(generation, []).append(call.result)
        return out

    def service(self, name: str) -> dict[str, Any]:
        svcs = self.ecs.describe_services(cluster="oab", services=[render.service_name(NS, name)])
        return dict(svcs["services"][0])


def _manifests(names: list[str], *, tag: str, plant: Plant) -> str:
    docs = []
    for name in names:
        extra = SM_SECRET.format(arn=plant.sm_arns[name]) if name in plant.sm_arns else ""
        docs.append(
            agent_manifest(name, namespace=NS, tag=tag, auto_restart=True, extra_secrets=extra)
        )
    return "---\n".join(docs)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("e2e")
    emulator = start(dataplane=True)
    cluster: LocalCluster | None = None
    try:
        DataPlaneControl(emulator.endpoint).configure(start_delay_s=0.5, tick_s=0.1)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OAB_", "AWS_"))},
            **emulator.env(),
            "OABCTL_CONFIG": os.devnull,
            "OAB_BUCKET": BUCKET,
        }
        session = boto3.Session(
            aws_access_key_id=LOCAL_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )

        def client(name: str) -> Any:
            return session.client(name, endpoint_url=emulator.endpoint)

        cluster = LocalCluster(
            emulator.endpoint,
            log_dir=workdir / "logs",
            config=ClusterConfig(bucket=BUCKET, workers=2, claim_visibility_s=5.0),
        )
        with pytest.MonkeyPatch.context() as mp:
            # In-process boto3 (the CLI, the store) must reach this emulator, not the session's.
            for key, value in emulator.env().items():
                mp.setenv(key, value)
            yield Env(
                emulator=emulator,
                env=env,
                cluster=cluster,
                ddb=client("dynamodb"),
                s3=client("s3"),
                ecs=client("ecs"),
                plant=Plant(),
                workdir=workdir,
            )
    finally:
        if cluster is not None:
            cluster.close()
        emulator.stop()


def _plant_secrets(e: Env) -> None:
    ssm = boto3.client("ssm", endpoint_url=e.emulator.endpoint, region_name="us-east-1")
    sm = boto3.client("secretsmanager", endpoint_url=e.emulator.endpoint, region_name="us-east-1")
    run = uuid.uuid4().hex[:8]
    for i, name in enumerate(AGENTS):
        value = f"planted-ssm-{run}-{i:02d}-value"
        ssm.put_parameter(Name=f"/oab/{NS}/{name}/discord-token", Value=value, Type="SecureString")
        e.plant.values.append(value)
    for name in AGENTS[:5]:  # a few agents also use Secrets Manager
        value = f"planted-sm-{run}-{name}-value"
        arn = sm.create_secret(Name=f"oab/{NS}/{name}/kiro", SecretString=value)["ARN"]
        e.plant.sm_arns[name] = arn
        e.plant.values.append(value)


def _apply(e: Env, names: list[str], *, tag: str) -> float:
    path = e.workdir / f"agents-{tag}-{len(names)}.yaml"
    path.write_text(_manifests(names, tag=tag, plant=e.plant))
    e.oabctl("apply", "-f", str(path))
    return time.monotonic()


def _wait_ready(e: Env, want: Mapping[str, int], *, timeout: float, what: str) -> None:
    def done() -> bool:
        statuses = e.statuses()
        return all(available_at(statuses.get(f"{NS}/{n}"), g) for n, g in want.items())

    try:
        wait_until(done, timeout=timeout, interval=0.5, message=what)
    except TimeoutError:
        statuses = e.statuses()
        late = {
            n: (s.phase, s.observed_generation, s.last_error[:200]) if s else None
            for n, g in want.items()
            if not available_at(s := statuses.get(f"{NS}/{n}"), g)
        }
        raise AssertionError(f"{what}: not ready after {timeout} s: {late}") from None


def test_three_replicas_end_to_end(e2e: Env) -> None:
    e = e2e
    t0 = time.monotonic()

    def mark(what: str) -> None:
        print(f"e2e {time.monotonic() - t0:6.1f} s  {what}", flush=True)  # shown with -s

    e.oabctl("init")
    _plant_secrets(e)
    e.cluster.start()
    first = e.cluster.wait_for_leader(timeout=20)

    # ---- apply 50; SIGKILL the leader once some agents run; the rest finish under a new leader.
    _apply(e, AGENTS, tag="v1")
    wait_until(
        lambda: sum(available_at(s, 1) for s in e.statuses().values()) >= 5,
        timeout=60,
        interval=0.3,
        message="the first agents running",
    )
    mark("some Available; killing the leader")
    e.cluster.kill(first.holder)
    killed_at = time.monotonic()
    second = e.cluster.wait_for_leader(timeout=20, not_holder=first.holder, after_epoch=first.epoch)
    failover_s = time.monotonic() - killed_at
    assert second.epoch > first.epoch
    assert failover_s < 3.0 + 0.5 + 5.0  # lease + retry period + slack for a loaded CI box
    e.cluster.start_replica(first.holder)  # comes back as a standby
    _wait_ready(e, dict.fromkeys(AGENTS, 1), timeout=120, what="50 agents Available")
    gen1 = e.statuses()
    for name in AGENTS:
        assert len(e.active_revisions(name)) == 1, name
    assert e.cluster.leader() is not None
    assert e.cluster.leader().holder == second.holder  # type: ignore[union-attr]

    mark("all 50 Available")
    # ---- change 10: exactly one new revision each (the new leader's scheduler picks it up).
    _apply(e, CHANGED, tag="v2")
    _wait_ready(e, dict.fromkeys(CHANGED, 2), timeout=90, what="10 changed agents at gen 2")
    gen2 = e.statuses()
    for name in CHANGED:
        registered = e.registered(name)
        assert sorted(registered) == [1, 2], (name, registered)
        assert all(len(arns) == 1 for arns in registered.values()), (name, registered)
        assert len(e.active_revisions(name)) == 2, name
        key = f"{NS}/{name}"
        assert gen2[key].task_definition_arn != gen1[key].task_definition_arn
        assert e.service(name)["taskDefinition"] == gen2[key].task_definition_arn
    for name in AGENTS[10:]:
        assert len(e.active_revisions(name)) == 1, name

    mark("changed 10")
    # ---- delete 5: service INACTIVE, no revisions, no artifacts, manifest and status gone.
    for name in DELETED:
        e.oabctl("delete", name, "-n", NS)

    def deleted() -> bool:
        statuses = e.statuses()
        return all(
            statuses[f"{NS}/{n}"].phase is None and statuses[f"{NS}/{n}"].audit_seq > 0
            for n in DELETED
        )

    wait_until(deleted, timeout=60, interval=0.5, message="5 deletions finished")
    for name in DELETED:
        svc = e.service(name)
        assert svc["status"] == "INACTIVE", name
        assert e.active_revisions(name) == [], name
        versions = e.s3.list_object_versions(Bucket=BUCKET, Prefix=f"artifacts/{NS}/{name}/")
        assert not versions.get("Versions"), name
        assert not versions.get("DeleteMarkers"), name
        with pytest.raises(ClientError):
            e.s3.head_object(Bucket=BUCKET, Key=f"manifests/{NS}/{name}.yaml")
        status = e.statuses()[f"{NS}/{name}"]
        assert status.phase is None
        assert not status.conditions
        assert not status.service_arn
        rows = e.runlog(name)
        assert rows[-1].from_phase == "Terminating"
        assert rows[-1].to_phase is None
    assert "agent-49" not in e.oabctl("get", "-n", NS)

    mark("deleted 5")
    # ---- restart: a new deployment of the same task definition.
    before = e.service(RESTARTED)
    before_deployment = before["deployments"][0]["id"]
    restarted_key = f"{NS}/{RESTARTED}"
    if "restart" in main.commands():
        e.oabctl("restart", RESTARTED, "-n", NS)
    else:
        # `oabctl restart` is not registered yet (cli_ops): write its annotation with the store.
        store = e.store()
        current = store.get(f"manifests/{restarted_key}.yaml")
        assert current is not None
        store.apply(
            Desired(
                kind="OABService",
                namespace=NS,
                name=RESTARTED,
                spec=current.spec,
                labels=current.labels,
                annotations={**current.annotations, RESTART_ANNOTATION: iso(time.time())},
            )
        )

    def redeployed() -> AgentStatus | None:
        status = e.statuses()[restarted_key]
        svc = e.service(RESTARTED)
        primary = next(d for d in svc["deployments"] if d["status"] == "PRIMARY")
        fresh = primary["id"] != before_deployment and primary.get("rolloutState") == "COMPLETED"
        return status if fresh and status.restart_marker and available_at(status, 1) else None

    restarted = wait_until(redeployed, timeout=60, interval=0.5, message="restart rolled out")
    assert restarted.task_definition_arn == gen1[restarted_key].task_definition_arn
    assert restarted.task_arns != gen1[restarted_key].task_arns  # a new task replaced the old one
    assert len(e.active_revisions(RESTARTED)) == 1

    mark("restarted")
    # ---- rollback ROLLED_BACK (at gen 2) to generation 1: a new generation 3 with gen 1's spec.
    rolled_key = f"{NS}/{ROLLED_BACK}"
    if "rollback" in main.commands():
        e.oabctl("rollback", ROLLED_BACK, "-n", NS, "--to-generation", "1")
    else:
        # `oabctl rollback` is not registered yet (cli_ops): re-apply gen 1's spec with the store.
        store = e.store()
        old = store.get_generation(f"manifests/{rolled_key}.yaml", 1)
        store.apply(
            Desired(
                kind="OABService",
                namespace=NS,
                name=ROLLED_BACK,
                spec=old.spec,
                labels=old.labels,
                annotations=old.annotations,
            )
        )
    _wait_ready(e, {ROLLED_BACK: 3}, timeout=60, what="rollback to gen 1 as gen 3")
    rolled = e.statuses()[rolled_key]
    # The config artifact path names the generation, so gen 3 gets its own (single) revision.
    registered = e.registered(ROLLED_BACK)
    assert sorted(registered) == [1, 2, 3], registered
    assert all(len(arns) == 1 for arns in registered.values()), registered
    assert registered[3] == [rolled.task_definition_arn]
    assert rolled.task_definition_arn not in (
        gen1[rolled_key].task_definition_arn,
        gen2[rolled_key].task_definition_arn,
    )
    image = e.ecs.describe_task_definition(taskDefinition=rolled.task_definition_arn)[
        "taskDefinition"
    ]["containerDefinitions"]
    assert any(c["image"].endswith(":v1") for c in image)

    mark("rolled back")
    # ---- a secret that cannot be injected: Failed + SecretInjectionFailed, old task keeps running.
    faulty_key = f"{NS}/{FAULTY}"
    old_tasks = e.statuses()[faulty_key].task_arns
    assert old_tasks
    DataPlaneControl(e.emulator.endpoint).fail_secret(f"/oab/{NS}/{FAULTY}/")
    _apply(e, [FAULTY], tag="v3")

    def failed() -> AgentStatus | None:
        status = e.statuses()[faulty_key]
        cond = status.condition("SecretInjectionFailed")
        ok = status.phase == "Failed" and cond is not None and cond.status == "True"
        return status if ok and status.observed_generation == 2 else None

    try:
        failure = wait_until(failed, timeout=60, interval=0.5, message="SecretInjectionFailed")
    except TimeoutError:
        status = e.statuses()[faulty_key]
        raise AssertionError(
            f"no SecretInjectionFailed: {status.phase} gen {status.observed_generation} "
            f"{[c.to_json() for c in status.conditions]} {status.last_error}; "
            f"deployments {e.service(FAULTY)['deployments']}"
        ) from None
    assert "secret" in failure.last_error.lower()
    running = e.ecs.list_tasks(cluster="oab", serviceName=render.service_name(NS, FAULTY))
    assert tuple(sorted(running["taskArns"])) == old_tasks
    svc = e.service(FAULTY)
    assert svc["runningCount"] == 1
    assert svc["taskDefinition"] == gen1[faulty_key].task_definition_arn

    mark("secret fault")
    # ---- the audit log over the whole run.
    finals = e.statuses()
    epochs: set[int] = set()
    adopted: list[str] = []
    for name in AGENTS:
        rows = e.runlog(name)
        epochs |= {r.epoch for r in rows}
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1)), name
        for prev, nxt in itertools.pairwise(rows):
            assert prev.to_phase == nxt.from_phase, (name, prev.seq, nxt.seq)
        assert rows[0].from_phase is None
        creates = [c for r in rows for c in r.calls if c.action == "ecs:CreateService"]
        assert len(creates) == 1, (name, creates)
        if creates[0].adopted:
            adopted.append(name)
        final = finals[f"{NS}/{name}"]
        assert final.audit_seq == len(rows), name
        assert final.phase == rows[-1].to_phase, name
    # A run that created a service on the SIGKILLed replica and died before its commit left no
    # audit row; its retry found the service and recorded it as adopted. At most one such run per
    # worker thread of the killed replica.
    assert len(adopted) <= e.cluster.config.workers, adopted
    # Work enqueued after the kill by a later leader's scheduler was done (a later leader, not
    # necessarily `second`: a loaded emulator can make a leader miss its renew deadline).
    assert max(epochs) > first.epoch

    mark("audit checked")
    # ---- no planted secret value anywhere.
    haystacks: dict[str, str] = {}
    for table in (TABLES.state, TABLES.runlog, TABLES.queue):
        items = [
            i for p in e.ddb.get_paginator("scan").paginate(TableName=table) for i in p["Items"]
        ]
        haystacks[f"table {table}"] = json.dumps(items)
    haystacks.update({f"log {k}": v for k, v in e.cluster.logs().items()})
    for page in e.s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        for v in page.get("Versions", []):
            body = e.s3.get_object(Bucket=BUCKET, Key=v["Key"], VersionId=v["VersionId"])
            haystacks[f"s3 {v['Key']}@{v['VersionId']}"] = body["Body"].read().decode()
    assert any(k.startswith("s3 artifacts/") for k in haystacks)
    for name in AGENTS[:45]:
        for arn in e.active_revisions(name):
            td = e.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
            haystacks[f"taskdef {arn}"] = json.dumps(td, default=str)
    status_json = e.oabctl("get", "-n", NS, "-o", "json")
    haystacks["oabctl get -o json"] = status_json
    leaks = [(where, v) for where, text in haystacks.items() for v in e.plant.values if v in text]
    assert leaks == []
    assert sum(len(v) for v in haystacks.values()) > 10_000  # the search really read things
