"""No unit can end a worker: commit failures, unreadable items and agent-written records.

A real replica (in process) against the emulator with the simulated ECS data plane; failures are
injected at the AWS boundary only (botocore hooks on the replica's own DynamoDB client) or by
writing bad items straight into the tables and bucket. Nothing of the project is mocked.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from oab.controller.adapters.state import read_runlog, read_status, status_to_item
from oab.controller.core.status import AgentStatus
from oab.controller.core.stored import AUDIT_CALLS_BYTES
from oab.controller.local.emulator import LocalAWS, start
from oab.controller.observability import telemetry
from oab.controller.runtime import daemon
from oab.controller.runtime.replica import Replica
from oab.controller.runtime.worker import Worker, WorkerConfig
from oab.controller.testing import (
    agent_manifest,
    available_at,
    oabctl,
    prepare_plane,
    replica_settings,
    running_replica,
    wait_until,
)
from oab.queue.errors import KeyNotFound
from oab.queue.row import State, ready_shard_of
from oab.queue.store import pk_of
from oab.queue.workqueue import idempotency_token

TIMEOUT = 60


@pytest.fixture(scope="module")
def emulator() -> Iterator[LocalAWS]:
    with start(dataplane=True) as handle:
        yield handle


@pytest.fixture
def env(emulator: LocalAWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = prepare_plane(
        emulator, config=tmp_path / "oabctl.toml", bucket="oab-poison-plane", reset=True
    )
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    assert oabctl("init").code == 0
    return values


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    handle = telemetry.setup(
        telemetry.TelemetryConfig(service_name="oab-controller", traces_exporter="none")
    )
    reader = InMemoryMetricReader()
    handle.add_metric_reader(reader)
    yield reader
    handle.remove_metric_reader(reader)


def counted(reader: InMemoryMetricReader, name: str, **attrs: str) -> int:
    """The sum of counter ``name`` over points whose attributes include ``attrs``."""
    total = 0
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    have = dict(point.attributes or {})
                    if all(have.get(k) == v for k, v in attrs.items()):
                        total += int(point.value)
    return total


def apply(name: str, *, tag: str = "v1", bootstrap_from: str | None = None) -> None:
    manifest = agent_manifest(name, namespace="team", tag=tag, bootstrap_from=bootstrap_from)
    oabctl("apply", "-f", "-", stdin=manifest).ok()


def available(replica: Replica, key: str, generation: int = 1) -> AgentStatus | None:
    status = read_status(replica.dynamodb, replica.tables.state, key)
    return status if available_at(status, generation) else None


def unit(replica: Replica, key: str) -> Any:
    """The work unit of ``key`` (an empty stand-in until it is enqueued)."""
    try:
        return replica.queue.get(key)
    except KeyNotFound:
        return _Absent()


class _Absent:
    state = None


def commits_of(params: dict[str, Any], key: str, runlog: str) -> bool:
    """Whether a TransactWriteItems request is a worker's commit of ``key`` with an audit row."""
    puts = [i["Put"] for i in params.get("TransactItems", []) if "Put" in i]
    return any(p["Item"].get("pk") == {"S": pk_of(key)} for p in puts) and any(
        p["TableName"] == runlog for p in puts
    )


def refuse_commits(replica: Replica, key: str, code: str, *, times: int) -> list[int]:
    """Fail the next ``times`` commits of ``key`` with ``code``; returns the hit counter."""
    hits = [0]

    def hook(params: dict[str, Any], **_kwargs: Any) -> None:
        if commits_of(params, key, replica.tables.runlog) and hits[0] < times:
            hits[0] += 1
            raise ClientError({"Error": {"Code": code, "Message": "Item size has exceeded "
                               "the maximum allowed size"}}, "TransactWriteItems")  # fmt: skip

    replica.dynamodb.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", hook)
    return hits


# ------------------------------------------------------------------------- commit failures


def test_a_commit_refused_as_invalid_parks_with_a_minimal_row_and_workers_go_on(
    env: dict[str, str], reader: InMemoryMetricReader
) -> None:
    settings = replica_settings(env["AWS_ENDPOINT_URL"], bucket=env["OAB_BUCKET"])
    with running_replica(settings) as replica:
        hits = refuse_commits(replica, "team/bad", "ValidationException", times=1)
        apply("bad")
        parked = wait_until(
            lambda: (u := unit(replica, "team/bad")).state is State.PARKED and u,
            timeout=TIMEOUT,
            message="team/bad parked",
        )
        apply("good")
        wait_until(lambda: available(replica, "team/good"), timeout=TIMEOUT, message="good")
        assert replica.alive()
    assert hits == [1]
    assert parked.last_error is not None
    assert parked.last_error.startswith("CommitRejected: the run's outcome (")
    status = read_status(replica.dynamodb, replica.tables.state, "team/bad")
    degraded = status.condition("Degraded")
    assert status.phase == "Failed"
    assert degraded is not None
    assert degraded.reason == "CommitRejected"
    rows = read_runlog(replica.dynamodb, replica.tables.runlog, "team/bad", newest_first=False)
    assert [(r.seq, r.outcome) for r in rows] == [(1, "park")]
    # The run's calls are in the minimal row: the service it created is audited once.
    assert [c.action for c in rows[0].calls].count("ecs:CreateService") == 1
    assert counted(reader, "oab.reconcile.runs", **{"oab.reason": "CommitRejected"}) == 1
    assert counted(reader, "oab.poison.items", **{"oab.kind": "commit"}) == 1


def test_when_even_the_minimal_commit_is_refused_the_row_alone_is_parked(
    env: dict[str, str],
) -> None:
    settings = replica_settings(env["AWS_ENDPOINT_URL"], bucket=env["OAB_BUCKET"])
    with running_replica(settings) as replica:
        refuse_commits(replica, "team/bad", "ValidationException", times=1000)
        apply("bad")
        parked = wait_until(
            lambda: (u := unit(replica, "team/bad")).state is State.PARKED and u,
            timeout=TIMEOUT,
            message="team/bad parked",
        )
        apply("good")
        wait_until(lambda: available(replica, "team/good"), timeout=TIMEOUT, message="good")
        assert replica.alive()
    assert parked.last_error is not None
    assert parked.last_error.startswith("CommitRejected")
    assert read_status(replica.dynamodb, replica.tables.state, "team/bad").phase is None


def test_a_throttled_commit_backs_off_and_the_unit_converges(
    env: dict[str, str], reader: InMemoryMetricReader
) -> None:
    settings = replica_settings(
        env["AWS_ENDPOINT_URL"], bucket=env["OAB_BUCKET"], backoff_base_s=0.2, backoff_cap_s=1.0
    )
    with running_replica(settings) as replica:
        hits = refuse_commits(
            replica, "team/bot", "ProvisionedThroughputExceededException", times=2
        )
        apply("bot")
        done = wait_until(lambda: available(replica, "team/bot"), timeout=TIMEOUT, message="bot")
        assert replica.alive()
    assert hits == [2]
    assert counted(reader, "oab.reconcile.runs", **{"oab.reason": "CommitFailed"}) == 2
    rows = read_runlog(replica.dynamodb, replica.tables.runlog, "team/bot", newest_first=False)
    assert [r.seq for r in rows] == list(range(1, done.audit_seq + 1))  # no gap
    creates = [c for r in rows for c in r.calls if c.action == "ecs:CreateService"]
    assert len(creates) == 1  # the lost runs' service is recorded once (adopted)


# ------------------------------------------------------------------- agent-written records


def test_three_300_kb_snapshot_records_leave_the_unit_committed_and_the_row_small(
    env: dict[str, str],
) -> None:
    s3 = __import__("boto3").client("s3", region_name="us-east-1")
    for n in range(3):
        record = {"agent": "team/snap", "id": f"big{n}", "trigger": "on-demand",
                  "status": "failed", "taken_at": 1.0, "error": "x" * 300_000}  # fmt: skip
        s3.put_object(
            Bucket=env["OAB_BUCKET"],
            Key=f"snapshots/team/snap/20290101T00000{n}.000Z-big{n}.json",
            Body=json.dumps(record).encode(),
        )
    settings = replica_settings(env["AWS_ENDPOINT_URL"], bucket=env["OAB_BUCKET"])
    with running_replica(settings) as replica:
        apply("snap", bootstrap_from="s3://agent-state/team/snap/home.tar.gz")
        status = wait_until(
            lambda: available(replica, "team/snap"), timeout=TIMEOUT, message="snap"
        )
        assert replica.alive()
    assert status.last_snapshot.endswith("big2.json")
    raw = replica.dynamodb.query(
        TableName=replica.tables.runlog,
        KeyConditionExpression="pk = :k",
        ExpressionAttributeValues={":k": {"S": "team/snap"}},
    )["Items"]
    assert max(len(i["calls"]["S"].encode()) for i in raw) < AUDIT_CALLS_BYTES
    rows = read_runlog(replica.dynamodb, replica.tables.runlog, "team/snap")
    snaps = [c for r in rows for c in r.calls if c.action == "s3:PutObject(snapshot)"]
    assert len(snaps) == 3
    assert all(c.result.startswith("failed: unreadable snapshot record: record of") for c in snaps)


# ------------------------------------------------------------------------ unreadable items


def test_a_corrupt_status_is_parked_shown_and_repaired_by_deleting_it(
    env: dict[str, str], reader: InMemoryMetricReader
) -> None:
    settings = replica_settings(env["AWS_ENDPOINT_URL"], bucket=env["OAB_BUCKET"])
    with running_replica(settings) as replica:
        ddb, tables = replica.dynamodb, replica.tables
        apply("bad")
        before = wait_until(lambda: available(replica, "team/bad"), timeout=TIMEOUT, message="bad")
        ddb.put_item(
            TableName=tables.state,
            Item={**status_to_item(before), "conditions": {"S": '[{"type": 7}]'}},
        )
        apply("bad", tag="v2")  # a change: its run meets the unreadable status
        wait_until(
            lambda: unit(replica, "team/bad").state is State.PARKED,
            timeout=TIMEOUT,
            message="team/bad parked",
        )
        apply("good")
        wait_until(lambda: available(replica, "team/good"), timeout=TIMEOUT, message="good")

        wide = oabctl("get", "-n", "team", "-o", "wide").ok().splitlines()
        header = wide[0].split()
        bad = next(line.split() for line in wide if line.startswith("bad "))
        assert bad[header.index("PHASE")] == "CorruptStatus"
        assert [bad[header.index("WORK")], bad[header.index("REASON")]] == [
            "parked",
            "CorruptStatus",
        ]
        described = oabctl("describe", "bad", "-n", "team").ok()
        assert "Unknown (CorruptStatus)" in described
        assert "conditions: condition type is not a string" in described
        listed = oabctl("queue", "-o", "json").json()
        row = next(r for r in listed["items"] if r["key"] == "team/bad")
        assert row["state"] == "parked"
        assert row["last_error"].startswith("CorruptStatus: state item agent#team/bad/status")
        waited = oabctl("wait", "bad", "-n", "team", "--for=condition=Available")
        assert waited.code == 1
        assert "the status cannot be read" in waited.err
        assert counted(reader, "oab.poison.items", **{"oab.kind": "status"}) >= 1

        # The operator's fix: delete the item and retry. The audit sequence continues after
        # the run log's newest row (never from 1 again, never a gap).
        ddb.delete_item(TableName=tables.state, Key={"pk": {"S": "agent#team/bad"},
                                                      "sk": {"S": "status"}})  # fmt: skip
        oabctl("queue", "retry", "team/bad").ok()
        after = wait_until(
            lambda: available(replica, "team/bad", 2), timeout=TIMEOUT, message="bad repaired"
        )
        assert replica.alive()
    rows = read_runlog(ddb, tables.runlog, "team/bad", newest_first=False)
    assert [r.seq for r in rows] == list(range(1, after.audit_seq + 1))
    assert after.audit_seq > before.audit_seq


def test_a_corrupt_queue_row_is_quarantined_shown_and_retried(
    env: dict[str, str], reader: InMemoryMetricReader
) -> None:
    settings = replica_settings(env["AWS_ENDPOINT_URL"], bucket=env["OAB_BUCKET"])
    with running_replica(settings) as replica:
        apply("q")
        wait_until(lambda: available(replica, "team/q"), timeout=TIMEOUT, message="q")
        # Indexed and due (so claims meet it), garbage elsewhere.
        replica.dynamodb.put_item(
            TableName=replica.tables.queue,
            Item={"pk": {"S": pk_of("team/q")}, "sk": {"S": "unit"}, "key": {"S": "team/q"},
                  "state": {"S": "ready"}, "ready_at": {"N": "1.000"},
                  "ready_shard": {"S": str(ready_shard_of("team/q", 4))}, "version": {"N": "9"},
                  "write_id": {"S": "x"}, "generation": {"BOOL": True}},
        )  # fmt: skip
        parked = wait_until(
            lambda: (
                (r := replica.queue.scan()[0]) and getattr(r, "state", None) is State.PARKED and r
            ),
            timeout=TIMEOUT,
            message="quarantined",
        )
        assert parked.last_error == "CorruptRow: generation: expected a number"
        header, row = (
            line.split()
            for line in oabctl("get", "q", "-n", "team", "-o", "wide").ok().splitlines()
        )
        assert [row[header.index("WORK")], row[header.index("REASON")]] == ["parked", "CorruptRow"]
        assert "CorruptRow: generation" in oabctl("queue").ok()
        assert counted(reader, "oab.poison.items", **{"oab.table": "queue"}) >= 1
        oabctl("queue", "retry", "team/q").ok()
        wait_until(
            lambda: unit(replica, "team/q").state is State.DONE, timeout=TIMEOUT, message="done"
        )
        assert replica.alive()


# --------------------------------------------------------------------------- dead threads


class _Bug(BaseException):
    """Escapes every ``except Exception``: stands for a bug no handler foresaw."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_worker_thread_makes_the_replica_unhealthy_and_exit_70(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beat = tmp_path / "health"
    monkeypatch.setenv("OAB_HEALTH_FILE", str(beat))
    woke = threading.Event()
    replica = Replica(
        replica_settings(env["AWS_ENDPOINT_URL"], bucket=env["OAB_BUCKET"]),
        on_loop_died=lambda _name: woke.set(),
    )

    def bug(params: dict[str, Any], **_kwargs: Any) -> None:
        if params.get("IndexName") == "ready-index":
            raise _Bug("claim query")

    replica.dynamodb.meta.events.register("provide-client-params.dynamodb.Query", bug)
    beat.write_text("0\n")
    replica.start()
    assert woke.wait(TIMEOUT)
    assert not replica.alive()
    code = daemon.supervise(replica, stop=threading.Event(), beat=beat, parent=None)
    assert code == daemon.EXIT_SOFTWARE == 70
    assert not beat.exists()
    assert daemon.healthcheck() == daemon.EXIT_UNHEALTHY
    assert sorted(replica.dead_loops()) == ["w0", "w1"]


def test_a_unit_whose_processing_raises_is_backed_off_and_the_loop_goes_on(
    env: dict[str, str], reader: InMemoryMetricReader
) -> None:
    # The replica's parts without its own loops: this worker is the only consumer.
    replica = Replica(replica_settings(env["AWS_ENDPOINT_URL"], bucket=env["OAB_BUCKET"]))
    seen: list[str] = []

    def boom(key: str, _run: str, _decision: Any) -> None:
        seen.append(key)
        if len(seen) == 1:
            raise RuntimeError("a bug after the commit")

    worker = Worker(
        queue=replica.queue,
        reconciler=replica.reconciler,
        state=replica.state,
        replica_id="r9",
        config=WorkerConfig(workers=1, idle_poll_s=0.05),
        on_outcome=boom,
    )
    names = ("one", "two", "three")
    for name in names:
        apply(name)
        replica.queue.enqueue(f"team/{name}", 1, "apply", idempotency_token(name, 1, "", "t"))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for name in names:
            wait_until(
                lambda n=name: available(replica, f"team/{n}"), timeout=TIMEOUT, message=name
            )
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(10)
    assert seen[0] in {f"team/{n}" for n in names}
    assert counted(reader, "oab.loop.errors", **{"oab.loop": "worker"}) == 1
