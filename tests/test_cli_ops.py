"""oabctl day-two commands: wait, describe, history, restart, rollback, logs, leader, queue.

Pure parts (duration and ``--for`` parsing, the wait verdict, the wait loop on a fake clock) are
tested directly; every command runs through ``cli.main([...])`` against the emulator, with
status items and audit rows written in the controller's real format
(:func:`oab.controller.core.status.transition_items`). The end-to-end run with a real replica is in
``test_cli_ops_replica.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from pathlib import Path
from typing import Any

import botocore.handlers
import pytest
import yaml

from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.state import read_status, transition_items
from oab.controller.adapters.store import DesiredStateStore, StoredObject, object_key
from oab.controller.base.names import RESTART_ANNOTATION
from oab.controller.cli import main as cli
from oab.controller.cli import registry
from oab.controller.cli.common import parse_duration
from oab.controller.cli.logs import LogTail
from oab.controller.cli.wait import (
    Observation,
    WaitPolicy,
    WaitTarget,
    evaluate,
    parse_wait_for,
    wait_for,
)
from oab.controller.core.status import AgentStatus, AuditRecord, AwsCall, Condition, next_status
from oab.controller.testing import AWS, FakeClock, agent_manifest, oabctl
from oab.leader.lease import DynamoLeaseStore
from oab.leader.record import Epoch, LeaseRecord, ReplicaId, Revision
from oab.queue.workqueue import WorkQueue

BUCKET = "oab-control-plane"
NOW = 1_800_000_000.0

FLEET = """\
apiVersion: oab.dev/v1
kind: OABFleet
metadata:
  name: crew
  namespace: team
spec:
  defaults:
    cpu: 256
    memory: 512
    taskDefinition:
      image: ghcr.io/openabdev/openab:v1
    config:
      agent:
        preset: kiro
      discord:
        bot_token: ${DISCORD_BOT_TOKEN}
        allowed_channels: ["123456789012345678"]
  agents:
    - name: crew-a
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OABCTL_CONFIG": str(tmp_path / "no-config")}


@pytest.fixture
def ready(aws: AWS, env: dict[str, str]) -> dict[str, str]:
    run = oabctl("init", "--debug", env=env)
    assert run.code == 0, run.err
    return env


def apply(env: dict[str, str], name: str = "bot", *, tag: str = "v1", tier: str = "a") -> None:
    manifest = agent_manifest(
        name,
        tag=tag,
        labels={"tier": tier},
        secret_path=f"/oab/team/{name}/very-private-path",
        auto_restart=True,
    )
    run = oabctl("apply", "-f", "-", stdin=manifest, env=env)
    assert run.code == 0, run.err


def stored(aws: AWS, name: str = "bot") -> StoredObject:
    store = DesiredStateStore(S3ObjectStore(aws.client("s3"), BUCKET))
    obj = store.get(object_key("OABService", "team", name))
    assert obj is not None
    return obj


def cond(type_: str, status: str, reason: str = "R", message: str = "m") -> Condition:
    return Condition(
        type=type_,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        message=message,
        last_transition_time="2027-01-15T08:00:00Z",
    )


def write_status(aws: AWS, key: str = "team/bot", **changes: Any) -> AgentStatus:
    """One status transition with its audit row, exactly as the worker writes them."""
    ddb = aws.client("dynamodb")
    before = read_status(ddb, aws.tables.state, key)
    after = next_status(before, **changes)
    seq = after.audit_seq
    audit = AuditRecord(
        key=key,
        seq=seq,
        run_id=f"run-{seq}",
        generation=after.observed_generation,
        token=f"tok-{seq}",
        replica="r1",
        epoch=3,
        trace_id=f"{seq:032x}",
        span_id=f"{seq:016x}",
        from_phase=before.phase,
        to_phase=after.phase,
        calls=(AwsCall(action="ecs:UpdateService", target="oab-team-bot"),),
        outcome="requeue",
        error="",
        duration_ms=12,
        at=NOW + seq,
    )
    ddb.transact_write_items(
        TransactItems=transition_items(
            state_table=aws.tables.state,
            runlog_table=aws.tables.runlog,
            before=before,
            after=after,
            audit=audit,
        )
    )
    return after


AVAILABLE = (cond("Available", "True", "DeploymentCompleted", "1/1 tasks running"),)


# ------------------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), ("500ms", 0.5), ("2", 2.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m", "5m3", "-1s", "1 h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(registry.UsageError):
        parse_duration(text)


def test_parse_wait_for() -> None:
    assert parse_wait_for("condition=Available") == WaitTarget("condition", "Available", "True")
    assert parse_wait_for("condition=Degraded=false") == WaitTarget(
        "condition", "Degraded", "False"
    )
    assert parse_wait_for("delete") == WaitTarget("delete")
    for bad in ("condition=", "condition=X=maybe", "Available", "jsonpath={.x}"):
        with pytest.raises(registry.UsageError):
            parse_wait_for(bad)


def _manifest(generation: int, *, deleted: bool = False) -> StoredObject:
    meta: dict[str, Any] = {"name": "bot", "namespace": "team", "generation": generation}
    if deleted:
        meta["deletionTimestamp"] = "2027-01-15T08:00:00Z"
    return StoredObject(object_key("OABService", "team", "bot"), {"metadata": meta}, "e", "v")


def _status(generation: int, phase: str | None, *conds: Condition) -> AgentStatus:
    return AgentStatus(
        key="team/bot",
        phase=phase,  # type: ignore[arg-type]
        observed_generation=generation,
        conditions=conds,
    )


AVAIL = WaitTarget("condition", "Available", "True")


def test_evaluate_requires_the_current_generation() -> None:
    stale = Observation(_manifest(2), _status(1, "Running", *AVAILABLE))
    assert evaluate(AVAIL, stale).state == "pending"
    assert "generation 2 not observed" in evaluate(AVAIL, stale).message
    assert evaluate(AVAIL, Observation(_manifest(2), _status(2, "Running", *AVAILABLE))).state == (
        "met"
    )


def test_evaluate_failed_phase_ends_the_wait_with_the_reason() -> None:
    failed = _status(
        1,
        "Failed",
        cond("Available", "False", "RolloutFailed", "circuit breaker"),
        cond("SecretInjectionFailed", "True", "SecretNotFound", "DISCORD_BOT_TOKEN not found"),
    )
    verdict = evaluate(AVAIL, Observation(_manifest(1), failed))
    assert verdict.state == "failed"
    assert "SecretNotFound: DISCORD_BOT_TOKEN not found" in verdict.message
    # Waiting for the failure condition itself is met, not failed.
    target = WaitTarget("condition", "SecretInjectionFailed", "True")
    assert evaluate(target, Observation(_manifest(1), failed)).state == "met"
    # A Failed phase of an older generation is not this generation's failure.
    assert evaluate(AVAIL, Observation(_manifest(2), failed)).state == "pending"


def test_evaluate_deletion() -> None:
    delete = WaitTarget("delete")
    assert evaluate(delete, Observation(None, _status(0, None))).state == "met"
    assert evaluate(delete, Observation(_manifest(1, deleted=True), _status(1, None))).state == (
        "pending"
    )
    gone = evaluate(AVAIL, Observation(_manifest(1, deleted=True), _status(1, "Running")))
    assert gone.state == "failed"


def test_wait_for_backs_off_resets_on_change_and_stops_at_the_deadline() -> None:
    clock = FakeClock()
    sleeps: list[float] = []
    progress: list[str] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    seen = iter([_status(0, None)] * 6 + [_status(1, "Pending")] * 100)
    verdict = wait_for(
        lambda: Observation(_manifest(1), next(seen)),
        AVAIL,
        timeout=10.0,
        policy=WaitPolicy(initial_interval=0.5, max_interval=2.0, factor=2.0),
        monotonic=clock.monotonic,
        sleep=sleep,
        progress=progress.append,
    )
    assert verdict.state == "timeout"
    assert sum(sleeps) == pytest.approx(10.0)  # never sleeps past the deadline
    assert sleeps[:6] == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]  # capped backoff
    assert sleeps[6] == 0.5  # the observation changed: back to the initial interval
    assert len(progress) == 2  # once per distinct message, not per poll


def test_wait_for_returns_as_soon_as_met() -> None:
    clock = FakeClock()
    seen = iter([_status(0, None), _status(1, "Running", *AVAILABLE)])
    verdict = wait_for(
        lambda: Observation(_manifest(1), next(seen)),
        AVAIL,
        timeout=60.0,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
    assert verdict.state == "met"
    assert clock.monotonic() == pytest.approx(1_000.2)


# ----------------------------------------------------------------------------------- wait


def test_wait_met_for_current_generation(aws: AWS, ready: dict[str, str]) -> None:
    apply(ready)
    write_status(aws, phase="Running", observed_generation=1, conditions=AVAILABLE)
    run = oabctl(
        "wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=5s", env=ready
    )
    assert run.code == 0, run.err
    assert run.out.strip() == "oabservice.oab.dev/bot condition met"


def test_wait_times_out_on_an_older_generation(aws: AWS, ready: dict[str, str]) -> None:
    apply(ready)
    write_status(aws, phase="Running", observed_generation=1, conditions=AVAILABLE)
    apply(ready, tag="v2")  # generation 2, not yet observed
    run = oabctl(
        "wait", "bot", "-n", "team", "--for", "condition=Available", "--timeout", "1s", env=ready
    )
    assert run.code == 1
    assert "timed out after 1s waiting for condition Available=True" in run.err
    assert "generation 2 not observed yet (observed 1)" in run.err


def test_wait_sees_a_status_written_while_polling(aws: AWS, ready: dict[str, str]) -> None:
    apply(ready)
    written = threading.Event()

    def controller() -> None:
        # Written after the first poll has certainly happened (the CLI polls at least once).
        written.wait(5)
        write_status(aws, phase="Running", observed_generation=1, conditions=AVAILABLE)

    worker = threading.Thread(target=controller)
    worker.start()
    out, err = io.StringIO(), _SignalOnWrite(written)
    code = cli.main(
        ["wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=20s"],
        stdout=out,
        stderr=err,
        env=ready,
    )
    worker.join()
    assert code == 0, err.getvalue()
    assert "generation 1 not observed yet" in err.getvalue()  # progress went to stderr


class _SignalOnWrite(io.StringIO):
    """stderr that sets an event on the first progress line."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self._event = event

    def write(self, s: str) -> int:
        n = super().write(s)
        self._event.set()
        return n


def test_wait_fails_fast_on_failed_phase(aws: AWS, ready: dict[str, str]) -> None:
    apply(ready)
    write_status(
        aws,
        phase="Failed",
        observed_generation=1,
        conditions=(
            cond("Available", "False", "RolloutFailed", "deployment failed"),
            cond("SecretInjectionFailed", "True", "ResourceInitializationError", "ssm denied"),
        ),
    )
    run = oabctl(
        "wait", "bot", "-n", "team", "--for=condition=Available", "--timeout=30s", env=ready
    )
    assert run.code == 1
    assert "Failed at generation 1: ResourceInitializationError: ssm denied" in run.err


def test_wait_condition_false_and_delete(aws: AWS, ready: dict[str, str]) -> None:
    apply(ready)
    write_status(
        aws,
        phase="Running",
        observed_generation=1,
        conditions=(*AVAILABLE, cond("Degraded", "False")),
    )
    run = oabctl("wait", "bot", "-n", "team", "--for=condition=Degraded=False", env=ready)
    assert run.code == 0, run.err
    # Not deleted yet: times out; a name that never existed counts as deleted (like kubectl).
    run = oabctl("wait", "bot", "-n", "team", "--for=delete", "--timeout=0.3s", env=ready)
    assert run.code == 1
    assert "not deleted" in run.err
    assert oabctl("wait", "ghost", "-n", "team", "--for=delete", env=ready).code == 0


def test_wait_usage_and_not_found(ready: dict[str, str]) -> None:
    missing = oabctl("wait", "ghost", "--for=condition=Available", "--timeout=1s", env=ready)
    assert missing.code == 1
    assert 'oabservice.oab.dev "ghost" in namespace default: not found' in missing.err
    assert oabctl("wait", "bot", "--for=bogus", env=ready).code == 2
    assert oabctl("wait", "bot", "--for=condition=Available", "--timeout=soon", env=ready).code == 2


# ------------------------------------------------------------------------------- describe


def test_describe_text_and_json(aws: AWS, ready: dict[str, str]) -> None:
    apply(ready)
    write_status(aws, phase="Pending", observed_generation=1)
    write_status(
        aws,
        phase="Running",
        observed_generation=1,
        conditions=AVAILABLE,
        task_arns=("arn:aws:ecs:us-east-1:123456789012:task/oab/abc",),
        service_arn="arn:aws:ecs:us-east-1:123456789012:service/oab/oab-team-bot",
        last_run_id="run-2",
        trace_id="0" * 31 + "2",
    )
    WorkQueue(aws.client("dynamodb"), aws.tables.queue).enqueue("team/bot", 1, "apply", "tok1")

    run = oabctl("describe", "bot", "-n", "team", env=ready)
    assert run.code == 0, run.err
    text = run.out
    for expected in (
        "Name:",
        "Generation:",
        "ghcr.io/openabdev/openab:v1",
        "DISCORD_BOT_TOKEN   ssm",
        "Phase:",
        "Running",
        "DeploymentCompleted",
        "1/1 tasks running",
        "task/oab/abc",
        "service/oab/oab-team-bot",
        "Queue:",
        "ready",
        "Recent Runs:",
        "SEQ",
        "TRACE",
        "run-1",
        "run-2",
    ):
        assert expected in text, expected
    assert "very-private-path" not in text  # secrets by name and source only
    runs = text[text.index("Recent Runs:") :]
    assert runs.index("run-1") < runs.index("run-2")  # runs oldest first

    doc = oabctl("describe", "bot", "-n", "team", "-o", "json", env=ready).json()
    assert set(doc) == {"kind", "metadata", "spec", "status", "queue", "recentRuns"}
    assert doc["metadata"]["generation"] == 1
    assert doc["spec"]["secrets"] == [
        {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "autoRestart": True}
    ]
    assert doc["status"]["phase"] == "Running"
    assert doc["status"]["conditions"][0]["type"] == "Available"
    assert doc["queue"]["state"] == "ready"
    assert doc["queue"]["ready_at"] is not None
    assert [r["seq"] for r in doc["recentRuns"]] == [1, 2]
    assert doc["recentRuns"][1]["traceId"] == f"{2:032x}"
    assert "very-private-path" not in run.out

    as_yaml = yaml.safe_load(oabctl("describe", "bot", "-n", "team", "-o", "yaml", env=ready).out)
    assert as_yaml["status"]["phase"] == "Running"


def test_describe_before_any_reconcile_and_not_found(ready: dict[str, str]) -> None:
    apply(ready)
    run = oabctl("describe", "bot", "-n", "team", env=ready)
    assert run.code == 0, run.err
    assert "Recent Runs:  <none>" in run.out
    assert "Queue:  <none>" in run.out
    assert oabctl("describe", "ghost", "-n", "team", env=ready).code == 1


# -------------------------------------------------------------------------------- history


def test_history_columns_order_limit_and_json(aws: AWS, env: dict[str, str]) -> None:
    for phase in ("Pending", "Running", "Running"):
        write_status(aws, phase=phase, observed_generation=1, last_error=phase)
    run = oabctl("history", "bot", "-n", "team", env=env)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == [
        "SEQ",
        "TIME",
        "RUN",
        "GEN",
        "FROM",
        "TO",
        "OUTCOME",
        "CALLS",
        "REPLICA",
        "EPOCH",
        "TRACE",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    assert lines[1].split()[4:6] == ["-", "Pending"]
    assert lines[2].split()[4:6] == ["Pending", "Running"]

    limited = oabctl("history", "bot", "-n", "team", "--limit", "2", env=env)
    assert [line.split()[0] for line in limited.out.splitlines()[1:]] == ["2", "3"]

    doc = oabctl("history", "bot", "-n", "team", "-o", "json", env=env).json()
    assert doc["kind"] == "List"
    first = doc["items"][0]
    assert first["key"] == "team/bot"
    for field in ("seq", "runId", "generation", "from", "to", "outcome", "calls", "traceId"):
        assert field in first
    assert (
        oabctl("history", "bot", "-n", "team", "-o", "wide", env=env)
        .out.splitlines()[0]
        .endswith("ERROR")
    )

    empty = oabctl("history", "ghost", "-n", "team", env=env)
    assert empty.code == 0
    assert "No runs recorded for team/ghost" in empty.err
    assert oabctl("history", "bot", "--limit", "0", env=env).code == 2


# ------------------------------------------------------------------------- restart, rollback


def test_restart_writes_the_annotation_without_a_new_generation(
    aws: AWS, ready: dict[str, str]
) -> None:
    apply(ready)
    before = stored(aws)
    run = oabctl("restart", "bot", "-n", "team", env=ready)
    assert run.code == 0, run.err
    assert run.out.strip() == "oabservice.oab.dev/bot restarted"
    after = stored(aws)
    assert after.generation == before.generation == 1
    assert after.spec == before.spec
    assert after.labels == before.labels
    marker = after.annotations[RESTART_ANNOTATION]
    assert marker.endswith("Z")
    assert "T" in marker
    # The change is recorded, so the controller's scheduler picks it up within seconds.
    changes = aws.client("dynamodb").scan(TableName=aws.tables.state)["Items"]
    assert sum(1 for i in changes if i["pk"]["S"].startswith("change")) >= 2
    # A later restart writes a new marker (it forces another deployment).
    assert oabctl("restart", "bot", "-n", "team", env=ready).code == 0
    assert stored(aws).annotations[RESTART_ANNOTATION] != marker
    assert oabctl("restart", "ghost", "-n", "team", env=ready).code == 1


def test_restart_is_compare_and_swap(aws: AWS, ready: dict[str, str], monkeypatch: Any) -> None:
    """An apply racing between restart's read and write is kept, not overwritten."""
    apply(ready)
    raced = {"done": False}

    def race(params: dict[str, Any], **_: Any) -> None:
        body = params.get("Body", b"")
        if not raced["done"] and isinstance(body, bytes) and b"restartedAt" in body:
            raced["done"] = True
            apply(ready, tag="v2")  # the racing user, after restart read generation 1

    # At the AWS boundary: every botocore session created from here on (the CLI builds its own
    # clients) runs the racing apply just before restart's PutObject is sent.
    monkeypatch.setattr(
        botocore.handlers,
        "BUILTIN_HANDLERS",
        [*botocore.handlers.BUILTIN_HANDLERS, ("provide-client-params.s3.PutObject", race)],
    )
    run = oabctl("restart", "bot", "-n", "team", env=ready)
    assert run.code == 0, run.err
    obj = stored(aws)
    assert raced["done"]
    assert obj.generation == 2
    assert obj.spec["taskDefinition"]["image"].endswith(":v2")  # the racing apply survived
    assert RESTART_ANNOTATION in obj.annotations


def test_rollback_reapplies_an_old_spec_as_a_new_generation(
    aws: AWS, ready: dict[str, str]
) -> None:
    apply(ready, tag="v1", tier="a")
    apply(ready, tag="v2", tier="a")
    apply(ready, tag="v2", tier="b")  # labels only: still generation 2
    run = oabctl("rollback", "bot", "-n", "team", "--to-generation", "1", env=ready)
    assert run.code == 0, run.err
    assert "rolled back to generation 1's spec as generation 3" in run.out
    obj = stored(aws)
    assert obj.generation == 3
    assert obj.spec["taskDefinition"]["image"].endswith(":v1")
    assert obj.labels["tier"] == "b"  # current labels kept

    again = oabctl("rollback", "bot", "-n", "team", "--to-generation", "1", env=ready)
    assert again.code == 0
    assert "unchanged" in again.out
    assert stored(aws).generation == 3

    missing = oabctl("rollback", "bot", "-n", "team", "--to-generation", "9", env=ready)
    assert missing.code == 1
    assert "generation 9 not found (stored generations: 1, 2, 3)" in missing.err
    assert oabctl("rollback", "ghost", "-n", "team", "--to-generation", "1", env=ready).code == 1


def test_rollback_of_a_fleet_child_is_refused(ready: dict[str, str]) -> None:
    run = oabctl("apply", "-f", "-", stdin=FLEET, env=ready)
    assert run.code == 0, run.err
    refused = oabctl("rollback", "crew-a", "-n", "team", "--to-generation", "1", env=ready)
    assert refused.code == 1
    assert "owned by fleet 'crew'" in refused.err
    assert "through the fleet" in refused.err


# ----------------------------------------------------------------------------------- logs


def _put_logs(aws: AWS, stream: str, *events: tuple[int, str]) -> None:
    logs = aws.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName="/oab/agents")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName="/oab/agents", logStreamName=stream)
    logs.put_log_events(
        logGroupName="/oab/agents",
        logStreamName=stream,
        logEvents=[{"timestamp": ts, "message": msg} for ts, msg in events],
    )


def test_logs_selects_the_agent_container_and_honours_tail_since_prefix(
    aws: AWS, env: dict[str, str]
) -> None:
    import time

    now_ms = int(time.time() * 1000)
    old = now_ms - 3_600_000
    _put_logs(aws, "team/bot/openab/t1", (old, "old line"), (now_ms - 2000, "agent 1"))
    _put_logs(aws, "team/bot/openab/t2", (now_ms - 1000, "agent 2"))
    _put_logs(aws, "team/bot/oab-init/t1", (now_ms - 3000, "init done"))
    _put_logs(aws, "team/bot-two/openab/t9", (now_ms - 500, "another agent"))

    run = oabctl("logs", "bot", "-n", "team", env=env)
    assert run.code == 0, run.err
    assert run.out.splitlines() == ["old line", "agent 1", "agent 2"]

    assert oabctl("logs", "bot", "-n", "team", "--tail", "1", env=env).out == "agent 2\n"
    assert oabctl("logs", "bot", "-n", "team", "--tail", "0", env=env).out == ""
    since = oabctl("logs", "bot", "-n", "team", "--since", "10m", env=env)
    assert since.out.splitlines() == ["agent 1", "agent 2"]

    every = oabctl("logs", "bot", "-n", "team", "--all-containers", "--prefix", env=env)
    assert every.out.splitlines() == [
        "[openab/t1] old line",
        "[oab-init/t1] init done",
        "[openab/t1] agent 1",
        "[openab/t2] agent 2",
    ]
    init = oabctl("logs", "bot", "-n", "team", "-c", "oab-init", env=env)
    assert init.out == "init done\n"

    none = oabctl("logs", "ghost", "-n", "team", env=env)
    assert none.code == 0
    assert "No log streams" in none.err
    assert oabctl("logs", "bot", "-c", "nginx", env=env).code == 2


def test_logs_without_a_log_group_is_empty(aws: AWS, env: dict[str, str]) -> None:
    run = oabctl("logs", "bot", "-n", "team", env=env)
    assert run.code == 0
    assert run.out == ""


def test_log_tail_returns_only_new_events(aws: AWS) -> None:
    import time

    t = int(time.time() * 1000) - 60_000  # CloudWatch refuses events older than 14 days
    _put_logs(aws, "team/bot/openab/t1", (t + 1000, "a"), (t + 2000, "b"))
    tail = LogTail(aws.client("logs"), "/oab/agents", "team/bot/openab/")
    assert [e.message for e in tail.poll()] == ["a", "b"]
    assert tail.poll() == []
    # Same timestamp as the cursor (startTime is inclusive) and a new stream of a new task.
    _put_logs(aws, "team/bot/openab/t1", (t + 2000, "b2"), (t + 3000, "c"))
    _put_logs(aws, "team/bot/openab/t2", (t + 2500, "new task"))
    assert [e.message for e in tail.poll()] == ["b2", "new task", "c"]
    assert tail.poll() == []


# --------------------------------------------------------------------------------- leader


def test_leader_without_a_leader(aws: AWS, env: dict[str, str]) -> None:
    run = oabctl("leader", env=env)
    assert run.code == 0, run.err
    header, row = run.out.splitlines()
    assert header.split() == ["LEASE", "HOLDER", "EPOCH", "RENEWED", "DURATION"]
    assert row.split()[:3] == ["controller", "<none>", "0"]
    doc = oabctl("leader", "-o", "json", env=env).json()
    assert doc["holder"] is None
    assert doc["epoch"] == 0


def test_leader_describes_an_unreadable_lease_item(aws: AWS, env: dict[str, str]) -> None:
    # Written straight to the table: an epoch of the wrong type, no revision.
    aws.client("dynamodb").put_item(
        TableName=aws.tables.lease,
        Item={"pk": {"S": "lease#controller"}, "sk": {"S": "lease"}, "epoch": {"S": "seven"}},
    )
    run = oabctl("leader", env=env)
    assert run.code == 0, run.err
    header, row = run.out.splitlines()
    assert header.split()[-1] == "PROBLEM"
    assert "unreadable lease item" in row
    doc = oabctl("leader", "-o", "json", env=env).json()
    assert doc["readable"] is False
    assert doc["holder"] is None
    assert "revision: missing" in doc["problem"]


def test_leader_shows_the_stored_lease(aws: AWS, env: dict[str, str]) -> None:
    import time

    now = time.time()
    DynamoLeaseStore(aws.client("dynamodb"), aws.tables.lease, "controller").try_acquire(
        LeaseRecord(
            name="controller",
            holder=ReplicaId("replica-b"),
            epoch=Epoch(7),
            revision=Revision("rev-1"),
            lease_duration_ms=15_000,
            transitions=7,
            acquired_at=now - 60,
            renewed_at=now - 2,
        ),
        expected=None,
    )
    run = oabctl("leader", env=env)
    assert run.code == 0, run.err
    assert run.out.splitlines()[1].split()[:3] == ["controller", "replica-b", "7"]
    assert "15s" in run.out
    doc = oabctl("leader", "-o", "json", env=env).json()
    assert doc["holder"] == "replica-b"
    assert doc["epoch"] == 7
    assert doc["lease_duration_s"] == 15.0
    assert doc["renewed_at"].startswith(time.strftime("%Y-", time.gmtime(now)))
    assert 1.0 <= doc["renewed_age_s"] < 30.0
    assert "TRANSITIONS" in oabctl("leader", "-o", "wide", env=env).out
    assert oabctl("leader", "--lease", "other", "-o", "json", env=env).json()["holder"] is None


# ---------------------------------------------------------------------------------- queue


def test_queue_list_json_and_retry(aws: AWS, env: dict[str, str]) -> None:
    queue = WorkQueue(aws.client("dynamodb"), aws.tables.queue)
    queue.enqueue("team/bot", 2, "apply", "tok-bot")
    queue.enqueue("team/zed", 1, "apply", "tok-zed")
    claim = queue.claim("r1/w0")
    assert claim is not None
    queue.fail(claim, "InvalidParameterException: bad image", retryable=False)  # parked

    run = oabctl("queue", env=env)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == [
        "KEY",
        "STATE",
        "GEN",
        "TOKEN",
        "ATTEMPTS",
        "READY-AT",
        "OWNER",
        "LAST-ERROR",
    ]
    parked_key = claim.key
    other = "team/zed" if parked_key == "team/bot" else "team/bot"
    by_key = {line.split()[0]: line for line in lines[1:]}
    assert by_key[parked_key].split()[1] == "parked"
    assert "bad image" in by_key[parked_key]
    assert by_key[other].split()[1] == "ready"

    doc = oabctl("queue", "-o", "json", env=env).json()
    keys = {"key", "state", "generation", "token", "attempts", "ready_at", "owner", "last_error"}
    assert all(keys <= set(item) for item in doc["items"])
    assert "REASON" in oabctl("queue", "-o", "wide", env=env).out

    ns, name = parked_key.split("/")
    retried = oabctl("queue", "retry", name, "-n", ns, env=env)
    assert retried.code == 0, retried.err
    assert f'workunit "{parked_key}" retried' in retried.out
    row = queue.get(parked_key)
    assert row.state.value == "ready"
    assert row.attempts == 0
    assert oabctl("queue", "retry", parked_key, env=env).code == 0  # ns/name form

    missing = oabctl("queue", "retry", "team/ghost", env=env)
    assert missing.code == 1
    assert "team/ghost" in missing.err
    assert oabctl("queue", "retry", env=env).code == 2
    assert oabctl("queue", "purge", env=env).code == 2


def test_queue_retry_refuses_an_in_flight_unit(aws: AWS, env: dict[str, str]) -> None:
    queue = WorkQueue(aws.client("dynamodb"), aws.tables.queue)
    queue.enqueue("team/bot", 1, "apply", "tok")
    assert queue.claim("r1/w0") is not None
    run = oabctl("queue", "retry", "team/bot", env=env)
    assert run.code == 1
    assert "in_flight" in run.err


def test_queue_empty(aws: AWS, env: dict[str, str]) -> None:
    run = oabctl("queue", env=env)
    assert run.code == 0
    assert run.out == ""
    assert "No work units" in run.err


@pytest.mark.slow
def test_logs_follow_prints_new_lines_until_interrupted(aws: AWS, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from oab.controller.testing import wait_until

    now_ms = int(time.time() * 1000)
    _put_logs(aws, "team/bot/openab/t1", (now_ms - 1000, "first"))
    child_env = {**os.environ, **aws.emulator.env(), "OABCTL_CONFIG": str(tmp_path / "none")}
    argv = ["logs", "bot", "-n", "team", "--follow", "--poll-interval", "0.2s"]
    code = "import sys; from oab.controller.cli.main import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout = proc.stdout
    assert stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")))
    reader.start()
    try:
        wait_until(lambda: "first\n" in lines, timeout=30, message="the existing line")
        _put_logs(aws, "team/bot/openab/t2", (int(time.time() * 1000), "second"))
        wait_until(lambda: "second\n" in lines, timeout=30, message="the followed line")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    assert lines == ["first\n", "second\n"]  # each line exactly once
