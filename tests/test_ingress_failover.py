"""A replica SIGKILLed in the middle of the ingress steps, resumed by the next leader: real
``oab-controller run`` processes on local AWS (moto + the simulated ECS data plane).

The fault is at the AWS boundary, in front of the first replica only: a small HTTP proxy
(:class:`HoldingProxy`) forwards its requests to the emulator and, at the first ``CreateApi``
(``POST /v2/apis``), lets the request reach the emulator but never answers it, and from then on
holds every request of that replica (a replica frozen right after an ingress create, before it
could record the id). The replica is SIGKILLed there; a second replica, talking to the emulator
directly, takes the lease, claims the unit once the dead replica's claim expires, and finishes.

What must hold afterwards (read from the emulator and the controller's tables):
- exactly one of each per-agent resource (HTTP API, integration, one route per path, stage, Cloud
  Map SRV service) and one of each shared one (namespace, VPC Link): the API the dead replica
  made is adopted by exact name and tags, not created again (moto accepts duplicate names, so a
  second create would show);
- the status records exactly those ids and the webhook URLs built from that API;
- the audit log lists the API's create once, marked ``adopted`` (the row of the run that made it
  was never committed).

Time model: every wait is a condition with a deadline (``wait_until``); nothing sleeps to hope.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from oab.controller.adapters.state import read_runlog, read_status
from oab.controller.local.cluster import ClusterConfig, LocalCluster
from oab.controller.testing import AWS, agent_manifest, oabctl, prepare_plane, wait_until

pytestmark = pytest.mark.slow

PATHS = ("/webhook/telegram", "/webhook/line")
KEY = "team/bot"
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "expect", "transfer-encoding", "content-length", "host"}
)


class HoldingProxy:
    """Forwards HTTP requests to ``upstream``; from the first request ``hold`` picks on, holds.

    The picked request is forwarded (the emulator executes it) and its answer withheld; every
    later request is held without being forwarded. Held handlers wait for :meth:`close`.
    """

    def __init__(self, upstream_port: int, hold: Callable[[str, str], bool]) -> None:
        self.held = threading.Event()
        self._released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.held.is_set():
                    proxy._released.wait()
                    self.close_connection = True
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                if hold(self.command, self.path):
                    proxy.held.set()  # executed upstream; the replica never learns it
                    proxy._released.wait()
                    self.close_connection = True
                    return
                self.send_response_only(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _relay

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Let held handlers end (their connections close unanswered) and stop serving."""
        self._released.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def frozen_at_create_api(aws: AWS) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(
        aws.emulator.port, lambda method, path: method == "POST" and path == "/v2/apis"
    )
    try:
        yield proxy
    finally:
        proxy.close()


def _manifest() -> str:
    block = "  ingress:\n    paths:\n" + "".join(f"      - {p}\n" for p in PATHS)
    return agent_manifest().replace("  config:\n", block + "  config:\n", 1)


def test_a_replica_killed_inside_the_ingress_steps_is_resumed_without_duplicates(
    aws: AWS, tmp_path: Path, frozen_at_create_api: HoldingProxy
) -> None:
    env = {**os.environ, **prepare_plane(aws.emulator, config=tmp_path / "none", init=True)}
    aws.client("ssm").put_parameter(
        Name="/oab/team/bot/discord-token", Value="planted-9f8e7d", Type="SecureString"
    )
    gw, sd = aws.client("apigatewayv2"), aws.client("servicediscovery")
    ddb, tables = aws.client("dynamodb"), aws.tables
    config = ClusterConfig(replicas=1, id_prefix="a", workers=2, claim_visibility_s=4.0)

    with (
        LocalCluster(frozen_at_create_api.endpoint, log_dir=tmp_path / "a", config=config) as a,
        LocalCluster(
            aws.emulator.endpoint,
            log_dir=tmp_path / "b",
            config=ClusterConfig(replicas=1, id_prefix="b", workers=2, claim_visibility_s=4.0),
        ) as b,
    ):
        a.start()
        first = a.wait_for_leader(timeout=60)
        assert first.holder == "a-1"
        assert oabctl("apply", "-f", "-", stdin=_manifest(), env=env).code == 0

        assert frozen_at_create_api.held.wait(timeout=120), "replica a never reached CreateApi"
        # The API exists in AWS, but no committed status knows it: the crash window.
        (made,) = gw.get_apis()["Items"]
        assert made["Name"] == "oab-webhook-team-bot"
        before = read_status(ddb, tables.state, KEY)
        assert before is not None
        assert "apiId" not in before.ingress
        assert before.ingress.get("registryArn")  # earlier steps were committed
        a.kill("a-1")

        b.start()
        second = b.wait_for_leader(timeout=60, after_epoch=first.epoch)
        assert second.holder == "b-1"

        def ready() -> Any:
            status = read_status(ddb, tables.state, KEY)
            cond = status.condition("IngressReady") if status else None
            done = cond is not None and cond.status == "True" and len(status.webhook_urls) == 2
            return status if done else None

        status = wait_until(ready, timeout=180, message="ingress finished by replica b")

    # Exactly one of each resource, and the status records exactly those.
    (api,) = gw.get_apis()["Items"]
    assert api["ApiId"] == made["ApiId"] == status.ingress["apiId"]
    (integration,) = gw.get_integrations(ApiId=api["ApiId"])["Items"]
    assert integration["IntegrationId"] == status.ingress["integrationId"]
    routes = sorted(r["RouteKey"] for r in gw.get_routes(ApiId=api["ApiId"])["Items"])
    assert routes == sorted(f"POST {p}" for p in PATHS)
    assert len(gw.get_stages(ApiId=api["ApiId"])["Items"]) == 1
    (registry,) = sd.list_services()["Services"]
    assert registry["Arn"] == status.ingress["registryArn"]
    (namespace,) = sd.list_namespaces()["Namespaces"]
    assert namespace["Id"] == status.ingress["namespaceId"]
    (link,) = gw.get_vpc_links()["Items"]
    assert link["VpcLinkId"] == status.ingress["vpcLinkId"]
    assert status.webhook_urls == tuple(f"{api['ApiEndpoint']}{p}" for p in PATHS)

    # The API's create is in the audit log once: adopted by the run that recorded it.
    creates = [
        call
        for row in read_runlog(ddb, tables.runlog, KEY, newest_first=False)
        for call in row.calls
        if call.action == "apigateway:CreateApi"
    ]
    assert [(c.result, c.adopted) for c in creates] == [(api["ApiId"], True)]
