"""Webhook ingress end to end on local AWS (moto: API Gateway v2, Cloud Map, EC2, ECS).

The worker's commit is played by the test: each run's status becomes the next run's input, and
a run that raises commits nothing (as a crashed replica). Duplicates are counted in the emulator
itself, which accepts duplicate Cloud Map services, routes and stages (README, Local AWS), so a
second create would show.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.clusterprofile import read_cluster_profile
from oab.controller.adapters.ecs import CallLog, EcsAdapter
from oab.controller.adapters.ingress import AwsIngress, AwsSecretValues
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.state import status_from_item, status_to_item
from oab.controller.adapters.store import DesiredStateStore
from oab.controller.base.errors import AwsError
from oab.controller.core.render import RenderContext
from oab.controller.core.status import AgentStatus, AwsCall
from oab.controller.local.dataplane import DataPlaneControl
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.reconcile.ingress import IngressConfig, IngressReconciler
from oab.controller.reconcile.reconciler import ReconcileConfig, Reconciler
from oab.controller.testing import AWS, FakeClock, agent_manifest, oabctl, reconcile_request

BUCKET = "oab-control-plane"
BOT_TOKEN = "7000000001:AAH-fake-telegram-token-for-tests-xyz"
HOOK_SECRET = "hook-secret-value-0123456789"


def manifest(name: str, paths: list[str] | None, *, telegram: bool = False) -> str:
    extra = ""
    if telegram:
        extra = (
            "    - name: TELEGRAM_BOT_TOKEN\n      source: ssm\n"
            f"      path: /oab/team/{name}/telegram-token\n"
            "    - name: TELEGRAM_SECRET_TOKEN\n      source: ssm\n"
            f"      path: /oab/team/{name}/telegram-secret\n"
        )
    text = agent_manifest(name, extra_secrets=extra)
    if paths is not None:
        block = "  ingress:\n    paths:\n" + "".join(f"      - {p}\n" for p in paths)
        text = text.replace("  config:\n", block + "  config:\n", 1)
    return text


@dataclass
class FakeTelegram:
    """A local stand-in for api.telegram.org: records setWebhook requests."""

    answer: tuple[int, dict[str, Any]] = (200, {"ok": True, "result": True})
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            fake.requests.append((self.path, urllib.parse.parse_qs(body)))
            code, answer = fake.answer
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


class Plane:
    """Reconcilers over the emulator, and the emulator's clients to inspect it with."""

    def __init__(self, aws: AWS, telegram: FakeTelegram) -> None:
        self.aws = aws
        self.telegram = telegram
        self.ecs = aws.client("ecs")
        self.gw = aws.client("apigatewayv2")
        self.sd = aws.client("servicediscovery")
        self.ec2 = aws.client("ec2")
        profile = read_cluster_profile(aws.client("s3"), BUCKET)
        assert profile is not None
        self.profile = profile
        self.committed: list[AwsCall] = []

    def reconciler(self, *, hooked: Any = None) -> Reconciler:
        """A fresh reconciler with its own clients (``hooked`` may register botocore hooks)."""
        aws = self.aws
        s3 = aws.client("s3")
        store = DesiredStateStore(
            S3ObjectStore(s3, BUCKET), changes=ChangeLog(aws.client("dynamodb"), aws.tables.state)
        )
        ctx = RenderContext(
            region="us-east-1",
            bucket=BUCKET,
            cluster="oab",
            agent_image="ghcr.io/openabdev/oab-controller:0.1.0",
            execution_role_arn="arn:aws:iam::{account}:role/oab-agent-exec-{namespace}-{name}",
            task_role_arn="arn:aws:iam::{account}:role/oab-agent-task-{namespace}-{name}",
            account_id="123456789012",
            default_subnets=self.profile.subnets,
            default_security_groups=self.profile.security_groups,
        )
        limiter = RateLimiter({})
        clients = {n: aws.client(n) for n in ("ecs", "apigatewayv2", "servicediscovery", "ec2")}
        if hooked is not None:
            for client in clients.values():
                hooked(client)
        ecs = EcsAdapter(clients["ecs"], cluster="oab", limiter=limiter)
        ssm, sm = aws.client("ssm"), aws.client("secretsmanager")
        return Reconciler(
            manifests=StoreManifests(store),
            ecs=ecs,
            s3=s3,
            bucket=BUCKET,
            secrets=SecretVersions(ssm=ssm, secretsmanager=sm, limiter=limiter),
            context=ctx,
            wall=FakeClock().time,
            config=ReconcileConfig(progress_poll_s=0.1),
            ingress=IngressReconciler(
                api=AwsIngress(
                    apigateway=clients["apigatewayv2"],
                    servicediscovery=clients["servicediscovery"],
                    ec2=clients["ec2"],
                    limiter=limiter,
                ),
                ecs=ecs,
                secret_value=AwsSecretValues(ssm=ssm, secretsmanager=sm, limiter=limiter),
                config=IngressConfig(link_poll_s=0.1, telegram_api_url=self.telegram.url),
            ),
        )

    def run(
        self, reconciler: Reconciler, status: AgentStatus, *, reason: str = "t"
    ) -> tuple[AgentStatus, float | None]:
        """One run; its status and calls are committed (round-tripped through the encoding)."""
        log = CallLog()
        req = reconcile_request(status.key, token="tok", reason=reason)
        result = reconciler.reconcile(req, status=status, log=log)
        self.committed.extend(log.snapshot())
        return status_from_item(status_to_item(result.status)), result.requeue_after

    def converge(
        self, reconciler: Reconciler, status: AgentStatus, *, runs: int = 40
    ) -> AgentStatus:
        """Run until ingress is ready (or removed) and nothing asks to continue at once."""
        for _ in range(runs):
            status, requeue = self.run(reconciler, status)
            ready = status.condition("IngressReady")
            settled = (ready is not None and ready.status == "True") or (
                ready is None and not status.ingress
            )
            if settled and requeue != 0.0:
                return status
        raise AssertionError(f"ingress did not converge: {status}")

    def delete(self, reconciler: Reconciler, status: AgentStatus, *, runs: int = 40) -> None:
        for _ in range(runs):
            status, _ = self.run(reconciler, status)
            if status.phase is None:
                return
        raise AssertionError(f"deletion did not finish: {status}")

    # ----------------------------------------------------------------- inspect
    def apis(self) -> dict[str, str]:
        return {a["Name"]: a["ApiId"] for a in self.gw.get_apis()["Items"]}

    def route_keys(self, api_id: str) -> list[str]:
        return sorted(r["RouteKey"] for r in self.gw.get_routes(ApiId=api_id)["Items"])

    def namespaces(self) -> list[str]:
        return [n["Name"] for n in self.sd.list_namespaces()["Namespaces"]]

    def registries(self) -> list[str]:
        return sorted(s["Name"] for s in self.sd.list_services()["Services"])

    def links(self) -> list[str]:
        return [link["Name"] for link in self.gw.get_vpc_links()["Items"]]

    def service(self, name: str) -> dict[str, Any]:
        found = self.ecs.describe_services(cluster="oab", services=[f"oab-team-{name}"])
        return dict(found["services"][0])

    def creates(self, action: str) -> int:
        return sum(1 for c in self.committed if c.action == action)


@pytest.fixture
def plane(
    aws: AWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, telegram: FakeTelegram
) -> Plane:
    monkeypatch.setenv("OABCTL_CONFIG", str(tmp_path / "none.toml"))
    for k, v in aws.emulator.env().items():
        monkeypatch.setenv(k, v)
    assert oabctl("init").code == 0
    DataPlaneControl(aws.emulator.endpoint).configure(paused=True)
    ssm = aws.client("ssm")
    for name in ("bot", "bot2"):
        ssm.put_parameter(
            Name=f"/oab/team/{name}/discord-token", Value="planted-9f8e7d", Type="SecureString"
        )
    ssm.put_parameter(Name="/oab/team/bot/telegram-token", Value=BOT_TOKEN, Type="SecureString")
    ssm.put_parameter(Name="/oab/team/bot/telegram-secret", Value=HOOK_SECRET, Type="SecureString")
    return Plane(aws, telegram)


def apply(text: str) -> None:
    result = oabctl("apply", "-f", "-", stdin=text)
    assert result.code == 0, result


def test_two_paths_get_urls_and_a_removed_path_prunes_its_route(plane: Plane) -> None:
    reconciler = plane.reconciler()
    apply(manifest("bot", ["/webhook/telegram", "/webhook/line"]))
    status = plane.converge(reconciler, AgentStatus(key="team/bot"))

    api_id = plane.apis()["oab-webhook-team-bot"]
    endpoint = plane.gw.get_api(ApiId=api_id)["ApiEndpoint"]
    assert status.webhook_urls == (
        f"{endpoint}/webhook/telegram",
        f"{endpoint}/webhook/line",
    )
    assert status.to_json()["webhookUrls"] == list(status.webhook_urls)
    assert status.ingress["apiId"] == api_id
    assert plane.route_keys(api_id) == ["POST /webhook/line", "POST /webhook/telegram"]
    (integration,) = plane.gw.get_integrations(ApiId=api_id)["Items"]
    registry_arn = status.ingress["registryArn"]
    assert (integration["IntegrationType"], integration["ConnectionType"]) == (
        "HTTP_PROXY",
        "VPC_LINK",
    )
    assert integration["IntegrationUri"] == registry_arn
    assert integration["ConnectionId"] == status.ingress["vpcLinkId"]
    assert integration["RequestParameters"] == {"overwrite:path": "$request.path"}
    (stage,) = plane.gw.get_stages(ApiId=api_id)["Items"]
    assert (stage["StageName"], stage["AutoDeploy"]) == ("$default", True)
    assert plane.service("bot")["serviceRegistries"] == [
        {"registryArn": registry_arn, "containerName": "openab", "containerPort": 8080}
    ]
    vpc = status.ingress["vpcId"]
    assert plane.namespaces() == [f"oab-{vpc}"]
    assert plane.links() == [f"oab-vpc-link-{vpc}"]
    (group,) = plane.profile.security_groups
    perms = plane.ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    assert any(
        p.get("FromPort") == 8080 and p["UserIdGroupPairs"][0]["GroupId"] == group
        for p in perms["IpPermissions"]
    )
    # The task definition maps the port Cloud Map registers.
    td = plane.ecs.describe_task_definition(taskDefinition=status.task_definition_arn)
    agent = next(c for c in td["taskDefinition"]["containerDefinitions"] if c["name"] == "openab")
    assert agent["portMappings"][0]["containerPort"] == 8080

    # Shown by get -o wide, get -o json and describe (the status as the worker stores it).
    plane.aws.client("dynamodb").put_item(
        TableName=plane.aws.tables.state, Item=status_to_item(status)
    )
    wide = oabctl("get", "bot", "-n", "team", "-o", "wide").ok()
    assert "WEBHOOKS" in wide
    assert ",".join(status.webhook_urls) in wide
    doc = oabctl("get", "bot", "-n", "team", "-o", "json").json()
    assert doc["status"]["webhookUrls"] == list(status.webhook_urls)
    described = oabctl("describe", "bot", "-n", "team").ok()
    assert "Webhook URLs:\n    " + status.webhook_urls[0] in described

    # A converged agent's progress polls read nothing from the ingress services.
    calls: list[str] = []
    quiet = plane.reconciler(
        hooked=lambda c: c.meta.events.register(
            "before-call.*.*", lambda model, **_: calls.append(model.name)
        )
    )
    plane.run(quiet, status)
    assert not [c for c in calls if c in ("GetApis", "GetApi", "GetRoutes", "ListNamespaces")]

    apply(manifest("bot", ["/webhook/telegram"]))
    status = plane.converge(reconciler, status)
    assert plane.route_keys(api_id) == ["POST /webhook/telegram"]
    assert status.webhook_urls == (f"{endpoint}/webhook/telegram",)
    assert plane.creates("apigateway:DeleteRoute") == 1
    assert plane.apis() == {"oab-webhook-team-bot": api_id}  # updated in place


def test_removing_ingress_keeps_shared_resources_for_a_second_agent(plane: Plane) -> None:
    reconciler = plane.reconciler()
    apply(manifest("bot", ["/webhook/line"]))
    apply(manifest("bot2", ["/webhook/line"]))
    bot = plane.converge(reconciler, AgentStatus(key="team/bot"))
    bot2 = plane.converge(reconciler, AgentStatus(key="team/bot2"))
    assert len(plane.namespaces()) == len(plane.links()) == 1  # shared per VPC
    assert bot.ingress["vpcLinkId"] == bot2.ingress["vpcLinkId"]
    assert plane.registries() == ["oab-team-bot", "oab-team-bot2"]

    apply(manifest("bot", None))
    bot = plane.converge(reconciler, bot)
    assert (bot.ingress, bot.webhook_urls, bot.condition("IngressReady")) == ({}, (), None)
    assert list(plane.apis()) == ["oab-webhook-team-bot2"]
    assert plane.registries() == ["oab-team-bot2"]
    assert plane.service("bot")["serviceRegistries"] == []
    assert len(plane.namespaces()) == len(plane.links()) == 1
    bot2_api = plane.apis()["oab-webhook-team-bot2"]
    assert plane.route_keys(bot2_api) == ["POST /webhook/line"]

    # Deleting the last agent leaves nothing of its own (the shared link and namespace stay).
    assert oabctl("delete", "bot2", "-n", "team").code == 0
    plane.delete(reconciler, bot2)
    assert plane.apis() == {}
    assert plane.registries() == []
    assert len(plane.namespaces()) == len(plane.links()) == 1
    assert plane.creates("apigateway:DeleteApi") == 2
    assert plane.creates("servicediscovery:DeleteService") == 2


MUTATING = frozenset(
    {
        "CreatePrivateDnsNamespace",
        "CreateService",
        "AuthorizeSecurityGroupIngress",
        "CreateVpcLink",
        "CreateApi",
        "CreateIntegration",
        "CreateRoute",
        "CreateStage",
    }
)


@pytest.mark.parametrize("crash_after", range(1, 10))
def test_a_crash_after_any_ingress_call_is_resumed_without_duplicates(
    plane: Plane, crash_after: int
) -> None:
    """The N-th mutating ingress call succeeds in AWS, then the replica dies before its commit;
    a fresh reconciler (the next leader's worker) resumes from the last committed status."""
    apply(manifest("bot", ["/webhook/telegram", "/webhook/line"]))
    done: list[str] = []

    class Crash(Exception):
        pass

    def after_call(model: Any, **_: Any) -> None:
        if model.name in MUTATING and model.service_model.service_name != "ecs":
            done.append(model.name)
            if len(done) == crash_after:
                raise Crash(model.name)

    crashing = plane.reconciler(hooked=lambda c: c.meta.events.register("after-call", after_call))
    status = AgentStatus(key="team/bot")
    crashed = ""
    for _ in range(40):
        try:
            status, _ = plane.run(crashing, status)
        except AwsError as exc:  # the adapter wraps what the client raised; nothing committed
            crashed = str(exc)
            break
    assert "Crash" in crashed
    status = plane.converge(plane.reconciler(), status)

    api_id = plane.apis()["oab-webhook-team-bot"]
    assert len(plane.gw.get_apis()["Items"]) == 1
    assert plane.registries() == ["oab-team-bot"]
    assert len(plane.namespaces()) == len(plane.links()) == 1
    assert len(plane.gw.get_integrations(ApiId=api_id)["Items"]) == 1
    assert plane.route_keys(api_id) == ["POST /webhook/line", "POST /webhook/telegram"]
    assert len(plane.gw.get_stages(ApiId=api_id)["Items"]) == 1
    assert len(status.webhook_urls) == 2
    # Audit completeness: every per-agent resource is in a committed row once (adopted or not).
    for action in (
        "servicediscovery:CreateService",
        "apigateway:CreateApi",
        "apigateway:CreateIntegration",
    ):
        assert plane.creates(action) == 1, (action, crash_after)


def test_telegram_set_webhook_is_best_effort_and_keeps_the_token_secret(plane: Plane) -> None:
    reconciler = plane.reconciler()
    plane.telegram.answer = (400, {"ok": False, "description": "Bad Request: bad webhook"})
    apply(manifest("bot", ["/webhook/telegram"], telegram=True))
    status = plane.converge(reconciler, AgentStatus(key="team/bot"))
    failed = status.condition("TelegramWebhook")
    assert failed is not None
    assert (failed.status, failed.reason) == ("False", "SetWebhookFailed")
    assert "bad webhook" in failed.message
    assert status.condition("IngressReady") is not None  # the run itself succeeded
    (path, form), = plane.telegram.requests  # fmt: skip
    assert path == f"/bot{BOT_TOKEN}/setWebhook"
    assert form == {"url": [status.webhook_urls[0]], "secret_token": [HOOK_SECRET]}

    # A resync tries again; success is recorded and not repeated by later runs.
    plane.telegram.answer = (200, {"ok": True, "result": True})
    status, _ = plane.run(reconciler, status, reason="resync")
    ok = status.condition("TelegramWebhook")
    assert ok is not None
    assert (ok.status, ok.reason) == ("True", "Registered")
    status, _ = plane.run(reconciler, status, reason="resync")
    assert len(plane.telegram.requests) == 2
    stored = json.dumps(status_to_item(status)) + json.dumps([c.to_json() for c in plane.committed])
    assert BOT_TOKEN not in stored
    assert HOOK_SECRET not in stored
