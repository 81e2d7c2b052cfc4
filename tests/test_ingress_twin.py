"""Ingress planner (pure) and the ingress reconciler on the in-memory twin, where it behaves as AWS
and moto does not: a VPC Link that stays PENDING, a Cloud Map service that cannot be deleted while
instances are registered, conflicts on duplicate creates (README, Local AWS)."""

from __future__ import annotations

from typing import Any

import pytest

from oab.controller.adapters.ecs import CallLog, EcsAdapter
from oab.controller.adapters.ingress import MemoryIngress
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.api.document import parse_document
from oab.controller.api.ingress import IngressSpec
from oab.controller.api.service import OABService
from oab.controller.core.ingress import Found, IngressRecord, Observed, plan
from oab.controller.core.status import AgentStatus
from oab.controller.reconcile.ingress import IngressConfig, IngressReconciler, UrllibTelegram

SPEC = IngressSpec(paths=["/webhook/a", "/webhook/b"])


def _observed(**overrides: Any) -> Observed:
    """A fully converged observation for SPEC, with ``overrides``."""
    base: dict[str, Any] = {
        "vpc_id": "vpc-1",
        "namespace": Found(id="ns-1"),
        "registry": Found(id="srv-1", arn="arn:srv-1"),
        "ruled_groups": frozenset({"sg-1"}),
        "vpc_link": Found(id="vl-1", status="AVAILABLE", security_groups=("sg-1",)),
        "api": Found(id="api1", endpoint="https://api1"),
        "integration": Found(
            id="int1",
            uri="arn:srv-1",
            connection_id="vl-1",
            parameters={"overwrite:path": "$request.path"},
        ),
        "routes": {
            "POST /webhook/a": ("r1", "integrations/int1"),
            "POST /webhook/b": ("r2", "integrations/int1"),
        },
        "stage": True,
        "attached": ("arn:srv-1",),
    }
    base.update(overrides)
    return Observed(**base)


def kinds(observed: Observed) -> list[tuple[str, str]]:
    return [
        (s.kind, s.target) for s in plan(spec=SPEC, observed=observed, security_groups=["sg-1"])
    ]


def test_converged_plans_nothing() -> None:
    assert kinds(_observed()) == []


def test_a_create_that_later_steps_use_ends_the_plan() -> None:
    assert kinds(_observed(namespace=None)) == [("create_namespace", "")]
    assert kinds(_observed(registry=None)) == [("create_registry", "")]
    # The shared rule goes with the link create (nothing refers to the rule's id).
    assert kinds(_observed(ruled_groups=frozenset(), vpc_link=None)) == [
        ("authorize_rule", "sg-1"),
        ("create_vpc_link", ""),
    ]
    assert kinds(_observed(api=None)) == [("create_api", "")]
    assert kinds(_observed(integration=None)) == [("create_integration", "")]
    pending = Found(id="vl-1", status="PENDING")
    assert kinds(_observed(vpc_link=pending)) == [("wait", "")]


def test_routes_are_pruned_replaced_and_created_in_one_run() -> None:
    observed = _observed(
        routes={
            "POST /webhook/a": ("r1", "integrations/old"),  # left by an earlier integration
            "POST /webhook/gone": ("r3", "integrations/int1"),
        },
        stage=False,
        attached=(),
        integration=Found(id="int1", uri="arn:srv-1", connection_id="vl-1"),
    )
    assert kinds(observed) == [
        ("update_integration", "int1"),
        ("delete_route", "r1"),
        ("delete_route", "r3"),
        ("create_route", "/webhook/a"),
        ("create_route", "/webhook/b"),
        ("create_stage", ""),
        ("attach_registry", "arn:srv-1"),
    ]


def test_record_round_trips_through_its_stored_map() -> None:
    record = IngressRecord(api_id="a", registry_id="s", routes={"/x": "r"}, telegram="k")
    assert IngressRecord.from_map(record.to_map()) == record
    assert record.to_map()["route /x"] == "r"


# ------------------------------------------------------------------ reconciler on the twin


class FakeEcs:
    """An ECS client that keeps one service's registries (all the ingress pass touches)."""

    def __init__(self) -> None:
        self.registries: list[dict[str, Any]] = []
        self.updates = 0

    def update_service(self, **kw: Any) -> dict[str, Any]:
        self.updates += 1
        self.registries = list(kw.get("serviceRegistries", self.registries))
        return {"service": self.describe()}

    def describe(self) -> dict[str, Any]:
        return {
            "serviceName": "oab-team-bot",
            "serviceArn": "arn:svc",
            "serviceRegistries": self.registries,
            "networkConfiguration": {
                "awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"]}
            },
        }


def _service(paths: list[str], *, secrets: str = "") -> OABService:
    doc = {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": "bot", "namespace": "team", "generation": 1},
        "spec": {
            "cpu": 256,
            "memory": 512,
            "taskDefinition": {"image": "ghcr.io/openabdev/openab:v1"},
            "secrets": [
                {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/t"},
                *(
                    [{"name": "TELEGRAM_BOT_TOKEN", "source": "ssm", "path": "/oab/tg"}]
                    if secrets
                    else []
                ),
            ],
            "config": {
                "agent": {"preset": "kiro"},
                "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
            },
            "ingress": {"paths": paths},
        },
    }
    obj = parse_document(doc)
    assert isinstance(obj, OABService)
    return obj


@pytest.fixture
def twin() -> tuple[MemoryIngress, FakeEcs, IngressReconciler]:
    api = MemoryIngress(subnets={"subnet-1": "vpc-1"})
    ecs = FakeEcs()
    adapter = EcsAdapter(ecs, cluster="oab", limiter=RateLimiter({}))
    return api, ecs, IngressReconciler(api=api, ecs=adapter, config=IngressConfig(link_poll_s=7))


def _ensure(
    rec: IngressReconciler, ecs: FakeEcs, svc: OABService, status: AgentStatus
) -> tuple[AgentStatus, float | None, CallLog]:
    log = CallLog()
    run = rec.ensure(
        svc=svc,
        status=status,
        describe=ecs.describe,
        resync=False,
        log=log,
        guard=None,
        now="t",
    )
    after = AgentStatus(
        key=status.key,
        ingress=run.ingress,
        webhook_urls=run.urls,
        conditions=run.conditions,
        secret_versions=status.secret_versions,
    )
    return after, run.requeue_after, log


def test_a_pending_vpc_link_requeues_without_blocking_then_completes(
    twin: tuple[MemoryIngress, FakeEcs, IngressReconciler],
) -> None:
    api, ecs, rec = twin
    svc = _service(["/webhook/a"])
    status = AgentStatus(key="team/bot")
    waits = []
    for _ in range(8):
        status, requeue, _ = _ensure(rec, ecs, svc, status)
        waits.append(requeue)
        if requeue == 7:
            break
    assert waits == [0.0, 0.0, 0.0, 7]  # namespace, SRV service, link (with the rule), wait
    ready = status.condition("IngressReady")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "VpcLinkPending")
    status, requeue, _ = _ensure(rec, ecs, svc, status)
    assert requeue == 7  # still PENDING: no create, another wait
    api.settle()
    for _ in range(5):
        status, requeue, _ = _ensure(rec, ecs, svc, status)
        if requeue is None:
            break
    assert status.webhook_urls == (
        f"https://{status.ingress['apiId']}.execute-api.local/webhook/a",
    )
    # Each create happened once, although the twin refuses duplicates as AWS does.
    assert all(
        n == 1
        for name, n in api.calls.items()
        if name.split(":")[-1].startswith(("Create", "Authorize"))
    )
    assert ecs.registries[0]["registryArn"] == status.ingress["registryArn"]


def test_link_security_groups_that_differ_are_a_warning(
    twin: tuple[MemoryIngress, FakeEcs, IngressReconciler],
) -> None:
    api, ecs, rec = twin
    api.links["vl-x"] = (
        "oab-vpc-link-vpc-1",
        Found(id="vl-x", status="AVAILABLE", security_groups=("sg-9",)),
    )
    status = AgentStatus(key="team/bot")
    for _ in range(10):
        status, requeue, _ = _ensure(rec, ecs, _service(["/webhook/a"]), status)
        if requeue is None:
            break
    warning = status.condition("VpcLinkSecurityGroups")
    assert warning is not None
    assert (warning.status, warning.reason) == ("True", "SecurityGroupsDiffer")
    assert status.ingress["vpcLinkId"] == "vl-x"  # the existing shared link is reused


def test_teardown_waits_while_instances_are_registered(
    twin: tuple[MemoryIngress, FakeEcs, IngressReconciler],
) -> None:
    api, ecs, rec = twin
    status = AgentStatus(key="team/bot")
    api.settle()
    for _ in range(12):
        status, requeue, _ = _ensure(rec, ecs, _service(["/webhook/a"]), status)
        api.settle()
        if requeue is None:
            break
    registry = status.ingress["registryId"]
    api.instances[registry] = 1  # ECS has not deregistered the task yet
    log = CallLog()
    run = rec.remove(
        key="team/bot", status=status, service=ecs.describe(), log=log, guard=None, now="t"
    )
    assert run.requeue_after == 7
    assert ecs.registries == []
    assert api.apis == {}
    assert registry in api.registries
    assert run.ingress.get("registryId") == registry  # still recorded: the next run deletes it
    api.instances[registry] = 0
    partial = AgentStatus(key="team/bot", ingress=run.ingress)
    done = rec.remove(
        key="team/bot", status=partial, service=ecs.describe(), log=CallLog(), guard=None, now="t"
    )
    assert (done.requeue_after, done.ingress) == (None, {})
    assert api.registries == {}
    assert len(api.links) == len(api.namespaces) == 1  # shared: kept


def test_telegram_failure_never_leaks_the_token() -> None:
    token = "7000000001:AAH-leak-check-token-abcdefghij"
    # Nothing listens on port 9: the URL error must not carry the URL (which holds the token).
    client = UrllibTelegram(base_url="http://127.0.0.1:9", timeout_s=2)
    message = client.set_webhook(token=token, url="https://x/webhook/telegram", secret_token="")
    assert message.startswith("Telegram setWebhook failed")
    assert token not in message
