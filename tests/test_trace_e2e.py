"""One trace per change, end to end: oabctl apply + an in-process Replica on the real emulator.

Spans are captured with an in-memory exporter attached to the process's telemetry; metrics with
an in-memory reader (deltas over the scenario, since counters are process-wide). Scenarios: a
create, an update, a rollout that fails with SecretInjectionFailed, and a reconcile that fails
(its stored manifest made invalid), is parked and is retried by the operator for the same
generation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from oab.controller.adapters.state import read_runlog, read_status
from oab.controller.core.status import AgentStatus
from oab.controller.local.dataplane import DataPlaneControl
from oab.controller.local.emulator import LocalAWS, start
from oab.controller.observability import telemetry
from oab.controller.runtime.replica import Replica
from oab.controller.testing import (
    agent_manifest,
    oabctl,
    prepare_plane,
    replica_settings,
    wait_until,
)

PLANTED = "planted-secret-XYZ"

STEPS_OF_CREATE = {
    "reconcile.read_manifest",
    "reconcile.secret_versions",
    "reconcile.render",
    "reconcile.describe_service",
    "reconcile.task_definition",
    "reconcile.artifact",
    "reconcile.service.create",
    "reconcile.observe",
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[LocalAWS]:
    with start(dataplane=True) as handle:
        yield handle


@pytest.fixture
def captured() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    handle = telemetry.setup(
        telemetry.TelemetryConfig(
            service_name="oab-controller", instance_id="r1", traces_exporter="none"
        )
    )
    assert handle.enabled
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    handle.add_span_exporter(spans)
    handle.add_span_exporter(_FILE)  # what `oabctl trace` reads (path set per test below)
    handle.add_metric_reader(reader)
    try:
        yield spans, reader
    finally:
        spans.shutdown()  # stops storing: the processor stays attached to the process
        handle.remove_metric_reader(reader)


class _SwitchableFile(telemetry.JsonLinesSpanExporter):
    """The process keeps its span processors: point this one at each test's file."""

    def __init__(self) -> None:
        super().__init__(Path("/dev/null"))


_FILE = _SwitchableFile()


@pytest.fixture
def env(emulator: LocalAWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = prepare_plane(
        emulator,
        config=tmp_path / "oabctl.toml",
        bucket="oab-trace-plane",
        extra={"OAB_TRACE_FILE": str(tmp_path / "traces.jsonl")},
        reset=True,
    )
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    _FILE.path = Path(values["OAB_TRACE_FILE"])
    return values


def apply(name: str, tag: str) -> None:
    oabctl("apply", "-f", "-", stdin=agent_manifest(name, tag=tag)).ok()


def counters(reader: InMemoryMetricReader) -> Counter[tuple[str, tuple[tuple[str, Any], ...]]]:
    """Cumulative sums of every counter, by (name, attributes)."""
    out: Counter[tuple[str, tuple[tuple[str, Any], ...]]] = Counter()
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in getattr(metric.data, "data_points", []):
                    value = getattr(point, "value", None)
                    if value is None:
                        value = getattr(point, "count", 0)  # histograms: observations
                    attrs = tuple(sorted((point.attributes or {}).items()))
                    out[(metric.name, attrs)] += value
    return out


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(spans: list[ReadableSpan], span: ReadableSpan) -> ReadableSpan | None:
    assert span.parent is not None
    return next((s for s in spans if s.context.span_id == span.parent.span_id), None)


def runs_of(spans: list[ReadableSpan], key: str, generation: int) -> list[ReadableSpan]:
    return sorted(
        (
            s
            for s in by_name(spans, "reconcile")
            if s.attributes
            and s.attributes.get("oab.agent.key") == key
            and s.attributes.get("oab.generation") == generation
        ),
        key=lambda s: s.start_time or 0,
    )


def children(spans: list[ReadableSpan], span: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == span.context.span_id]


def subtree(spans: list[ReadableSpan], span: ReadableSpan) -> list[ReadableSpan]:
    out, stack = [], [span]
    while stack:
        cur = stack.pop()
        out.append(cur)
        stack.extend(children(spans, cur))
    return out


@pytest.mark.slow
def test_one_trace_per_change_shapes_links_audit_secrets_and_metrics(
    env: dict[str, str], captured: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    exporter, reader = captured
    oabctl("init").ok()
    ssm = boto3.client("ssm", region_name="us-east-1")
    for name in ("bot", "late"):
        ssm.put_parameter(
            Name=f"/oab/team/{name}/discord-token",
            Value=PLANTED,
            Type="SecureString",
            Overwrite=True,
        )
    dp = DataPlaneControl(env["AWS_ENDPOINT_URL"])
    replica = Replica(
        replica_settings(
            env["AWS_ENDPOINT_URL"],
            bucket=env["OAB_BUCKET"],
            backoff_base_s=0.2,
            backoff_cap_s=1.0,
        )
    )
    ddb, tables = replica.dynamodb, replica.tables
    exporter.clear()
    before = counters(reader)
    # 1. failed then retried: the stored manifest of "late" is made invalid behind oabctl's back
    #    before the controller sees it (a terminal error: parked), then restored and retried by
    #    the operator for the same generation.
    apply("late", "v1")
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket, object_key = env["OAB_BUCKET"], "manifests/team/late.yaml"
    good = s3.get_object(Bucket=bucket, Key=object_key)
    good_body, good_meta = good["Body"].read(), good["Metadata"]
    broken_doc = yaml.safe_load(good_body)
    broken_doc["spec"]["cpu"] = "lots"
    s3.put_object(
        Bucket=bucket, Key=object_key, Body=yaml.safe_dump(broken_doc), Metadata=good_meta
    )
    replica.start()
    try:

        def status(key: str) -> AgentStatus:
            return read_status(ddb, tables.state, key)

        def settled(key: str, phase: str, generation: int) -> AgentStatus | None:
            s = status(key)
            return s if s.phase == phase and s.observed_generation == generation else None

        parked = wait_until(
            lambda: (s := status("team/late")).phase == "Failed" and s,
            timeout=30,
            message="late parked",
        )
        assert "no longer valid" in parked.last_error
        s3.put_object(Bucket=bucket, Key=object_key, Body=good_body, Metadata=good_meta)
        replica.queue.retry("team/late")
        wait_until(lambda: settled("team/late", "Running", 1), timeout=30, message="late runs")
        # 2. create, 3. update, 4. a rollout that fails with SecretInjectionFailed.
        apply("bot", "v1")
        wait_until(lambda: settled("team/bot", "Running", 1), timeout=30, message="bot gen 1")
        apply("bot", "v2")
        wait_until(lambda: settled("team/bot", "Running", 2), timeout=30, message="bot gen 2")
        dp.fail_secret("/oab/team/bot/discord-token")
        apply("bot", "v3")
        failed = wait_until(
            lambda: settled("team/bot", "Failed", 3), timeout=45, message="bot gen 3 failed"
        )
        injection = failed.condition("SecretInjectionFailed")
        assert injection is not None
        assert injection.status == "True"
    finally:
        replica.shutdown()
    telemetry.installed().flush()  # type: ignore[union-attr]
    spans = list(exporter.get_finished_spans())

    applies = [
        s
        for s in by_name(spans, "oabctl apply")
        if s.parent is None and s.kind is SpanKind.INTERNAL
    ]
    assert len(applies) == 4

    def check_change(key: str, generation: int) -> list[ReadableSpan]:
        """apply -> enqueue (PRODUCER) -> every run (CONSUMER), one trace, linked."""
        runs = runs_of(spans, key, generation)
        assert runs, f"no reconcile span for {key} gen {generation}"
        trace_ids = {r.context.trace_id for r in runs}
        assert len(trace_ids) == 1, "retries/progress runs of one generation share one trace"
        enqueue = parent_of(spans, runs[0])
        assert enqueue is not None
        assert enqueue.name == "enqueue"
        assert enqueue.kind is SpanKind.PRODUCER
        assert enqueue.attributes is not None
        assert enqueue.attributes["messaging.operation.type"] == "send"
        root = parent_of(spans, enqueue)
        assert root is not None
        assert root.name == "oabctl apply"
        assert root.parent is None
        for run in runs:
            assert run.kind is SpanKind.CONSUMER
            assert run.context.trace_id == root.context.trace_id
            assert [link.context.span_id for link in run.links] == [run.parent.span_id]  # type: ignore[union-attr]
            attrs = run.attributes or {}
            for name in (
                "oab.agent.key",
                "oab.generation",
                "oab.run_id",
                "oab.idempotency_token",
                "oab.replica_id",
                "oab.epoch",
                "messaging.system",
            ):
                assert name in attrs, name
            assert attrs["oab.replica_id"] == "r1"
            assert int(attrs["oab.epoch"]) >= 1
            kids = children(spans, run)
            assert kids[0].name == "claim" or "claim" in {k.name for k in kids}
        return runs

    # create: the first run registers, writes the artifact, creates; later runs observe.
    create = check_change("team/bot", 1)
    names = {s.name for r in create for s in subtree(spans, r)}
    assert names >= STEPS_OF_CREATE
    aws_calls = [
        s
        for r in create
        for s in subtree(spans, r)
        if s.kind is SpanKind.CLIENT and s.name != "claim"
    ]
    assert {"ECS.CreateService", "ECS.RegisterTaskDefinition", "S3.PutObject"} <= {
        s.name for s in aws_calls
    }
    for call in aws_calls:
        attrs = call.attributes or {}
        assert attrs["rpc.system"] == "aws-api"
        assert attrs.get("aws.request_id"), f"{call.name} has no request id"
    transitions = [
        e.attributes
        for r in create
        for e in r.events
        if e.name == "status.transition" and e.attributes
    ]
    assert ("", "Pending") in {(t["oab.from_phase"], t["oab.to_phase"]) for t in transitions} or (
        "",
        "Running",
    ) in {(t["oab.from_phase"], t["oab.to_phase"]) for t in transitions}

    # update: no create, an UpdateService under reconcile.service.update.
    update = check_change("team/bot", 2)
    update_names = {s.name for r in update for s in subtree(spans, r)}
    assert "reconcile.service.update" in update_names
    assert "reconcile.service.create" not in update_names
    assert "ECS.UpdateService" in update_names

    # failed rollout: the observe step says why.
    rollout = check_change("team/bot", 3)
    events = [
        e
        for r in rollout
        for s in subtree(spans, r)
        if s.name == "reconcile.observe"
        for e in s.events
        if e.name == "rollout.failed"
    ]
    assert events
    assert events[-1].attributes is not None
    assert events[-1].attributes["oab.secret_injection_failed"] is True

    # failed (parked) then retried by the operator: same generation, same trace.
    late = check_change("team/late", 1)
    assert len(late) >= 2
    first, last = late[0], late[-1]
    assert first.status.status_code is StatusCode.ERROR
    assert (first.attributes or {})["oab.outcome"] == "park"
    assert any(e.name == "exception" for s in subtree(spans, first) for e in s.events)
    assert (last.attributes or {})["oab.outcome"] in ("done", "requeue")

    # every audit row names a trace with spans, and its span is that run's reconcile span
    reconcile_by_span = {s.context.span_id: s for s in by_name(spans, "reconcile")}
    trace_ids = {s.context.trace_id for s in spans}
    rows = read_runlog(ddb, tables.runlog, "team/bot") + read_runlog(
        ddb, tables.runlog, "team/late"
    )
    assert rows
    for row in rows:
        assert int(row.trace_id, 16) in trace_ids
        span = reconcile_by_span[int(row.span_id, 16)]
        assert (span.attributes or {})["oab.run_id"] == row.run_id

    # planted secret values appear nowhere in what was exported
    blob = json.dumps([telemetry.span_to_json(s) for s in spans], default=str)
    assert PLANTED not in blob

    # metrics agree with the spans the scenario produced
    after = counters(reader)
    delta = after - before
    outcomes: Counter[str] = Counter(
        str((s.attributes or {}).get("oab.outcome")) for s in by_name(spans, "reconcile")
    )
    by_outcome: Counter[str] = Counter()
    for (name, attrs), value in delta.items():
        if name == "oab.reconcile.runs":
            by_outcome[str(dict(attrs)["oab.outcome"])] += int(value)
    assert by_outcome == outcomes
    errors = {dict(a).get("error.type") for (n, a), v in delta.items() if n == "oab.aws.errors"}
    # Every AWS error code a CLIENT span carries is counted by the error metric (the metric also
    # counts calls made outside any span, e.g. a lease renewal's failed condition).
    span_errors = {
        str((s.attributes or {})["aws.error.code"])
        for s in spans
        if "aws.error.code" in (s.attributes or {})
    }
    assert span_errors  # the scenario does hit expected AWS errors (e.g. a missing object)
    assert span_errors <= errors
    assert by_outcome["park"] == 1
    calls = sum(v for (n, _a), v in delta.items() if n == "oab.aws.calls")
    assert calls >= len([s for s in spans if (s.attributes or {}).get("rpc.system") == "aws-api"])

    # `oabctl trace`: from the agent (newest run) or a run id to the span tree, and the link.
    newest = read_runlog(ddb, tables.runlog, "team/bot", limit=1)[0]
    text = oabctl("trace", "bot", "-n", "team").ok()
    assert text.splitlines()[0].startswith(f"trace {newest.trace_id}  agent team/bot")
    assert "oabctl apply" in text
    assert "└─ enqueue  [PRODUCER]" in text
    run_line = next(line for line in text.splitlines() if line.endswith("<== run"))
    assert f"run_id={newest.run_id}" in run_line
    first_late = read_runlog(ddb, tables.runlog, "team/late", newest_first=False)[0]
    by_run = oabctl(
        "trace",
        first_late.run_id,
        env={**env, "OAB_TRACE_URL_TEMPLATE": "http://jaeger:16686/trace/{trace_id}"},
    ).ok()
    assert f"link: http://jaeger:16686/trace/{first_late.trace_id}" in by_run
    assert "reconcile.read_manifest" in by_run
    assert "TerminalError" in by_run  # the exception event of the parked run
    assert PLANTED not in Path(env["OAB_TRACE_FILE"]).read_text()
