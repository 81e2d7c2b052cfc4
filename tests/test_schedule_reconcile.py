"""Suspend, scale and schedules through the reconciler and oabctl, on local AWS.

``oabctl scale`` writes the manifest (a new generation) and never ECS; the reconciler turns the
level of ``(spec, instant)`` into ECS ``desiredCount``, phase ``Suspended`` and conditions, and
names what set the count in the run's calls (the audit row).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.clusterprofile import read_cluster_profile
from oab.controller.adapters.ecs import CallLog, EcsAdapter
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.store import DesiredStateStore
from oab.controller.core.outcome import Result
from oab.controller.core.render import RenderContext
from oab.controller.core.status import AgentStatus, check_transition
from oab.controller.local.dataplane import DataPlaneControl
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.reconcile.reconciler import ReconcileConfig, Reconciler
from oab.controller.testing import AWS, FakeClock, agent_manifest, oabctl, reconcile_request

BUCKET = "oab-control-plane"
NIGHT = datetime(2027, 1, 4, 22, tzinfo=UTC).timestamp()


@pytest.fixture
def plane(aws: AWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("OABCTL_CONFIG", str(tmp_path / "none.toml"))
    for k, v in aws.emulator.env().items():
        monkeypatch.setenv(k, v)
    assert oabctl("init").code == 0
    DataPlaneControl(aws.emulator.endpoint).configure(paused=True)
    s3 = aws.client("s3")
    store = DesiredStateStore(
        S3ObjectStore(s3, BUCKET), changes=ChangeLog(aws.client("dynamodb"), aws.tables.state)
    )
    profile = read_cluster_profile(s3, BUCKET)
    assert profile is not None
    limiter = RateLimiter({})
    clock = FakeClock(wall=NIGHT - 120)
    reconciler = Reconciler(
        manifests=StoreManifests(store),
        ecs=EcsAdapter(aws.client("ecs"), cluster="oab", limiter=limiter),
        s3=s3,
        bucket=BUCKET,
        secrets=SecretVersions(
            ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"), limiter=limiter
        ),
        context=RenderContext(
            region="us-east-1",
            bucket=BUCKET,
            cluster="oab",
            agent_image="ghcr.io/openabdev/oab-controller:0.1.0",
            execution_role_arn="arn:aws:iam::{account}:role/oab-agent-exec-{namespace}-{name}",
            task_role_arn="arn:aws:iam::{account}:role/oab-agent-task-{namespace}-{name}",
            account_id="123456789012",
            default_subnets=profile.subnets,
            default_security_groups=profile.security_groups,
        ),
        wall=clock.time,
        config=ReconcileConfig(progress_poll_s=0.1),
    )
    aws.client("ssm").put_parameter(
        Name="/oab/team/bot/discord-token", Value="planted-9f8e7d", Type="SecureString"
    )
    return {"reconciler": reconciler, "ecs": aws.client("ecs"), "clock": clock}


def _apply(**spec: Any) -> None:
    doc = yaml.safe_load(agent_manifest())
    doc["spec"].update(spec)
    assert oabctl("apply", "-f", "-", stdin=yaml.safe_dump(doc)).code == 0


def _run(
    plane: dict[str, Any], status: AgentStatus, *, gen: int, reason: str = "apply"
) -> tuple[Result, CallLog]:
    log = CallLog()
    req = reconcile_request("team/bot", token=f"t{gen}{reason}", reason=reason)
    result = plane["reconciler"].reconcile(req, status=status, log=log)
    assert result.status.phase is not None
    check_transition(status.phase, result.status.phase)
    return result, log


def _desired(plane: dict[str, Any]) -> int:
    svc = plane["ecs"].describe_services(cluster="oab", services=["oab-team-bot"])["services"]
    return int(svc[0]["desiredCount"])


def _cond(status: AgentStatus, type_: str) -> tuple[str, str]:
    cond = status.condition(type_)
    assert cond is not None, type_
    return cond.status, cond.reason


def test_scale_writes_the_manifest_and_the_reconciler_suspends_and_resumes(
    plane: dict[str, Any],
) -> None:
    _apply()
    first, _ = _run(plane, AgentStatus(key="team/bot"), gen=1)
    assert _desired(plane) == 1
    assert first.status.condition("Suspended") is None  # nothing to say about it yet

    assert oabctl("scale", "bot", "0", "-n", "team").ok().strip() == (
        "oabservice.oab.dev/bot scaled to 0 (generation 2)"
    )
    assert _desired(plane) == 1  # scale never touches ECS: the reconcile does
    manifest = yaml.safe_load(oabctl("get", "oabservice", "bot", "-n", "team", "-o", "yaml").ok())
    assert manifest["spec"]["suspend"] is True
    suspended, log = _run(plane, first.status, gen=2)
    assert _desired(plane) == 0
    assert suspended.status.phase == "Suspended"
    assert _cond(suspended.status, "Suspended") == ("True", "SuspendedBySpec")
    assert _cond(suspended.status, "Available") == ("False", "Suspended")
    calls = {c.action: c for c in log.snapshot()}
    assert calls["ecs:UpdateService"]
    assert calls["oab:DesiredCount"].result == "1 -> 0: suspended by spec.suspend"
    assert oabctl("scale", "bot", "0", "-n", "team").ok().strip().endswith("(unchanged)")

    assert oabctl("scale", "bot", "1", "-n", "team").ok().strip().endswith("(generation 3)")
    resumed, log = _run(plane, suspended.status, gen=3)
    assert _desired(plane) == 1
    assert resumed.status.phase in ("Pending", "Running")
    assert _cond(resumed.status, "Suspended") == ("False", "Resumed")
    manifest = yaml.safe_load(oabctl("get", "oabservice", "bot", "-n", "team", "-o", "yaml").ok())
    assert "suspend" not in manifest["spec"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("scale", "bot", "2", "-n", "team"), "invalid size '2'"),
        (("scale", "bot", "-1", "-n", "team"), "invalid size '-1'"),
        (("scale", "nobody", "0", "-n", "team"), '"nobody" in namespace team: not found'),
    ],
)
def test_scale_refuses_bad_input(plane: dict[str, Any], argv: tuple[str, ...], says: str) -> None:
    _apply()
    result = oabctl(*argv)
    assert result.code == 1
    assert says in result.err


def test_a_schedule_sets_the_count_and_is_named_in_conditions_and_calls(
    plane: dict[str, Any],
) -> None:
    _apply(
        schedules=[
            {"name": "off", "expr": "cron(0 22 * * ? *)", "replicas": 0},
            {"name": "on", "expr": "cron(0 6 * * ? *)", "replicas": 1},
        ]
    )
    day, _ = _run(plane, AgentStatus(key="team/bot"), gen=1)  # at 21:58
    assert _desired(plane) == 1
    scheduled = day.status.condition("Scheduled")
    assert scheduled is not None
    assert scheduled.message.startswith("replicas 0 at 2027-01-04T22:00:00Z by schedule off")
    # The leader enqueued the 22:00 transition; this worker's clock trails by 2 s.
    plane["clock"].advance(118)
    night, log = _run(plane, day.status, gen=1, reason="schedule@2027-01-04T22:00:00Z")
    assert _desired(plane) == 0
    assert night.status.phase == "Suspended"
    assert _cond(night.status, "Suspended") == ("True", "SuspendedBySchedule")
    [count] = [c for c in log.snapshot() if c.action == "oab:DesiredCount"]
    assert count.result.startswith("1 -> 0: schedule off (cron(0 22 * * ? *), UTC) set replicas 0")
    night_cond = night.status.condition("Scheduled")
    assert night_cond is not None
    assert "replicas 1 at 2027-01-05T06:00:00Z by schedule on" in night_cond.message
    # describe shows the count, its cause and the next transition from manifest + clock.
    shown = oabctl("describe", "bot", "-n", "team").ok()
    assert "Next Transition:" in shown
