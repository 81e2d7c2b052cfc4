"""Telemetry building blocks: settings from OTEL_* env, resource (ECS), scrubbing, sampling,
the JSON-lines exporter, throttle counting, and ``oabctl trace``'s pure tree/link helpers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from oab.controller.cli.trace import RunRef, format_tree, resolve_link, select_spans
from oab.controller.observability import telemetry
from oab.controller.observability.telemetry import (
    REDACTED,
    JsonLinesSpanExporter,
    OrphanAwsCallSampler,
    TelemetryConfig,
    build_resource,
    read_spans,
    register_secret,
    scrub_span,
)

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def ctx(span_id: int) -> SpanContext:
    return SpanContext(TRACE, span_id, is_remote=False, trace_flags=TraceFlags(1))


def span(
    name: str,
    span_id: int,
    *,
    parent: int | None = None,
    attributes: dict[str, Any] | None = None,
    events: tuple[Event, ...] = (),
    status: Status | None = None,
    start: int = 0,
) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=ctx(span_id),
        parent=ctx(parent) if parent else None,
        attributes=attributes or {},
        events=events,
        status=status or Status(StatusCode.UNSET),
        start_time=1_000 + start,
        end_time=2_000_000 + start,
    )


# ------------------------------------------------------------------------------- settings


def test_config_defaults_to_the_local_file_without_an_endpoint() -> None:
    cfg = TelemetryConfig.from_env({}, service_name="oabctl")
    assert (cfg.traces_exporter, cfg.metrics_exporter) == ("file", "none")
    assert cfg.trace_file == telemetry.DEFAULT_TRACE_FILE
    assert cfg.service_name == "oabctl"
    assert cfg.drop_orphan_aws_calls


def test_config_uses_otlp_http_when_an_endpoint_is_set() -> None:
    cfg = TelemetryConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318/", "OTEL_SERVICE_NAME": "x"},
        service_name="oab-controller",
        instance_id="r7",
    )
    assert (cfg.traces_exporter, cfg.metrics_exporter) == ("otlp", "otlp")
    assert cfg.otlp_traces_endpoint == "http://localhost:4318/v1/traces"
    assert cfg.otlp_metrics_endpoint == "http://localhost:4318/v1/metrics"
    assert (cfg.service_name, cfg.instance_id) == ("x", "r7")


def test_config_trace_file_off_disabled_and_bad_exporter() -> None:
    cfg = TelemetryConfig.from_env(
        {"OAB_TRACE_FILE": "off", "OTEL_SDK_DISABLED": "true", "OAB_TRACE_ORPHAN_AWS_CALLS": "1"},
        service_name="oabctl",
    )
    assert cfg.trace_file is None
    assert cfg.disabled
    assert not cfg.drop_orphan_aws_calls
    with pytest.raises(ValueError, match="traces_exporter"):
        TelemetryConfig.from_env({"OTEL_TRACES_EXPORTER": "zipkin"}, service_name="oabctl")


# ------------------------------------------------------------------------------- resource


class _Metadata(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        task = {
            "TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/oab/abc",
            "Cluster": "oab",
            "LaunchType": "FARGATE",
            "Family": "oab-controller",
            "Revision": "7",
        }
        container = {"ContainerARN": "arn:aws:ecs:us-east-1:123456789012:container/oab/abc/x"}
        body = json.dumps(task if self.path.endswith("/task") else container).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def ecs_metadata(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/v4/meta"
    monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def test_resource_names_service_and_replica() -> None:
    cfg = TelemetryConfig(service_name="oab-controller", instance_id="r2", detect_ecs=False)
    attrs = build_resource(cfg).attributes
    assert attrs["service.name"] == "oab-controller"
    assert attrs["service.instance.id"] == "r2"
    assert attrs["service.namespace"] == "oab"


def test_resource_on_ecs_has_the_task_attributes(ecs_metadata: str) -> None:
    attrs = build_resource(TelemetryConfig(service_name="oab-controller")).attributes
    assert attrs["cloud.platform"] == "aws_ecs"
    assert attrs["aws.ecs.task.arn"] == "arn:aws:ecs:us-east-1:123456789012:task/oab/abc"
    assert attrs["aws.ecs.cluster.arn"] == "arn:aws:ecs:us-east-1:123456789012:cluster/oab"
    assert attrs["aws.ecs.launchtype"] == "fargate"
    assert attrs["aws.ecs.task.revision"] == "7"


# ------------------------------------------------------------------------------ scrubbing


def test_scrubber_redacts_credentials_keys_values_and_registered_secrets() -> None:
    register_secret("planted-secret-XYZ")
    original = span(
        "reconcile",
        1,
        attributes={
            "oab.idempotency_token": "team/bot:3:abc:apply",
            "http.request.header.authorization": "AWS4-HMAC-SHA256 Credential=...",
            "note": "key AKIAIOSFODNN7EXAMPLE and planted-secret-XYZ",
            "list": ["Bearer abcdefghijklmnop", "fine"],
            "count": 3,
        },
        events=(Event("exception", {"exception.message": "bad token xoxb-1234567890-abcdef"}, 5),),
        status=Status(StatusCode.ERROR, "failed with planted-secret-XYZ"),
    )
    clean = scrub_span(original)
    attrs = dict(clean.attributes or {})
    assert attrs["oab.idempotency_token"] == "team/bot:3:abc:apply"
    assert attrs["http.request.header.authorization"] == REDACTED
    assert attrs["note"] == f"key {REDACTED} and {REDACTED}"
    assert list(attrs["list"]) == [REDACTED, "fine"]
    assert attrs["count"] == 3
    assert clean.events[0].attributes == {"exception.message": f"bad token {REDACTED}"}
    assert clean.status.description == f"failed with {REDACTED}"
    assert clean.context == original.context


def test_scrubber_returns_clean_spans_unchanged() -> None:
    original = span("reconcile", 1, attributes={"oab.agent.key": "team/bot"})
    assert scrub_span(original) is original


# ------------------------------------------------------------------------------- sampling


def test_orphan_aws_calls_are_dropped_and_everything_else_kept() -> None:
    sampler = OrphanAwsCallSampler()
    aws = {"rpc.system": "aws-api", "rpc.service": "DynamoDB"}
    assert (
        sampler.should_sample(None, TRACE, "DynamoDB.Query", SpanKind.CLIENT, aws).decision
        is Decision.DROP
    )
    kept = sampler.should_sample(None, TRACE, "reconcile", SpanKind.CONSUMER, {}).decision
    assert kept is Decision.RECORD_AND_SAMPLE


# ------------------------------------------------------------------------ JSON-lines file


def test_jsonl_exporter_round_trips_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "t" / "traces.jsonl"
    exporter = JsonLinesSpanExporter(path, max_bytes=100)
    first = span("oabctl apply", 1, attributes={"oab.command": "apply"})
    exporter.export([first])
    exporter.export([span("enqueue", 2, parent=1)])  # past 100 bytes: rotated
    assert path.with_name("traces.jsonl.1").exists()
    path.open("a").write("{torn line\n")
    got = list(read_spans(path))
    assert [s["name"] for s in got] == ["oabctl apply", "enqueue"]
    assert got[0]["trace_id"] == format(TRACE, "032x")
    assert got[1]["parent_span_id"] == format(1, "016x")
    assert got[0]["attributes"] == {"oab.command": "apply"}


# ------------------------------------------------------------------ throttle counting


def test_throttled_attempts_are_counted_and_the_call_goes_on() -> None:
    class Op:
        name = "DescribeServices"

        class service_model:
            service_id = "ECS"

    seen: list[tuple[int, dict[str, str]]] = []
    original = telemetry.instruments.aws_throttles
    telemetry.instruments.aws_throttles = type(  # type: ignore[assignment]
        "C", (), {"add": lambda _self, n, attrs: seen.append((n, attrs))}
    )()
    try:
        throttled = {"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {}}
        ok = {"ResponseMetadata": {"HTTPStatusCode": 200}}
        for parsed in (throttled, ok):
            result = telemetry._count_throttled_attempt(
                lambda **_kw: "delay", None, (), {"response": (None, parsed), "operation": Op()}
            )
            assert result == "delay"
    finally:
        telemetry.instruments.aws_throttles = original
    assert seen == [(1, {"rpc.service": "ECS", "rpc.method": "DescribeServices"})]


# ----------------------------------------------------------------------- oabctl trace


def _tree() -> list[dict[str, Any]]:
    exporter_spans = [
        span("oabctl apply", 1, start=0),
        span("enqueue", 2, parent=1, start=1, attributes={"oab.agent.key": "team/bot"}),
        span(
            "reconcile",
            3,
            parent=2,
            start=2,
            attributes={"oab.run_id": "r-1", "oab.outcome": "park"},
            events=(Event("status.transition", {"oab.from_phase": "", "oab.to_phase": "Failed"}),),
            status=Status(StatusCode.ERROR, "InvalidManifest"),
        ),
        span("reconcile.read_manifest", 4, parent=3, start=3),
        span("reconcile", 5, parent=2, start=10, attributes={"oab.run_id": "r-2"}),
        span("S3.GetObject", 6, parent=5, start=11, attributes={"aws.request_id": "RQ1"}),
    ]
    return [telemetry.span_to_json(s) for s in exporter_spans]


def test_select_spans_keeps_ancestors_and_the_runs_subtree() -> None:
    spans = _tree()
    ref = RunRef(trace_id=format(TRACE, "032x"), span_id=format(3, "016x"))
    names = [s["name"] for s in select_spans(spans, ref, whole=False)]
    assert names == ["oabctl apply", "enqueue", "reconcile", "reconcile.read_manifest"]
    assert len(select_spans(spans, ref, whole=True)) == 6


def test_format_tree_shows_kinds_errors_events_and_the_run_marker() -> None:
    spans = _tree()
    lines = format_tree(spans, mark=format(3, "016x"))
    assert lines[0].startswith("oabctl apply")
    assert lines[1].startswith("└─ enqueue")
    run_line = next(line for line in lines if "run_id=r-1" in line)
    assert "ERROR InvalidManifest" in run_line
    assert run_line.endswith("<== run")
    assert any("* phase - -> Failed" in line for line in lines)
    assert any("S3.GetObject" in line and "aws.request_id=RQ1" in line for line in lines)


def test_resolve_link_fills_jaeger_and_xray_templates() -> None:
    ref = RunRef(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="00f067aa0ba902b7")
    assert (
        resolve_link("http://jaeger:16686/trace/{trace_id}", ref)
        == "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"
    )
    xray = resolve_link(
        "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        "#xray:traces/{xray_trace_id}",
        ref,
        region="eu-west-1",
    )
    assert xray.endswith("#xray:traces/1-4bf92f35-77b34da6a3ce929d0e0e4736")
    assert xray.startswith("https://eu-west-1.console")


def test_step_spans_record_exceptions_as_events() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    handle = telemetry.setup(TelemetryConfig(traces_exporter="none", trace_file=None))
    exporter = InMemorySpanExporter()
    handle.add_span_exporter(exporter)
    try:
        with pytest.raises(RuntimeError), telemetry.step("render", {"oab.service": "x"}):
            raise RuntimeError("boom")
        done = [s for s in exporter.get_finished_spans() if s.name == "reconcile.render"]
    finally:
        exporter.shutdown()
    assert len(done) == 1
    assert done[0].status.status_code is StatusCode.ERROR
    assert [e.name for e in done[0].events] == ["exception"]
    assert (done[0].attributes or {})["oab.service"] == "x"
