"""OpenTelemetry for the controller and ``oabctl``: providers, exporters, scrubbing, instruments.

Design
------
- **One setup per process** (:func:`setup`), called by ``oab-controller run`` (service name
  ``oab-controller``, ``service.instance.id`` = the replica id) and by ``oabctl`` (``oabctl``).
  Library code never sets a provider: it uses the OpenTelemetry API (``trace.get_tracer``,
  ``metrics.get_meter``), which is a no-op until a provider is installed. A second call of
  :func:`setup` in the same process returns the handle installed first (OpenTelemetry allows one
  global provider per process); tests add their in-memory exporters and readers to it.
- **Configuration from the standard variables** (:meth:`TelemetryConfig.from_env`):
  ``OTEL_SDK_DISABLED``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`` (and the
  exporter's own ``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT``), ``OTEL_TRACES_EXPORTER`` /
  ``OTEL_METRICS_EXPORTER`` (``otlp``, ``console``, ``none``; ours adds ``file``),
  ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and ``OTEL_METRIC_EXPORT_INTERVAL`` (read by the SDK).
  Ours: ``OAB_TRACE_FILE`` (the local JSON-lines file; ``off`` disables it) and
  ``OAB_TRACE_ORPHAN_AWS_CALLS``.
- **Exporters.** With an OTLP endpoint, spans and metrics go over OTLP/HTTP (protobuf) to the
  collector (see ``ops/otel-collector.yaml``). Without one (the local default), spans are
  appended to a JSON-lines file, by default ``~/.oab/traces.jsonl``: a per-user path rather than
  one under the working directory, so that ``oabctl trace`` finds the spans of daemons and
  ``oabctl apply`` runs started from any directory. The file rotates once at
  :data:`TRACE_FILE_MAX_BYTES` (one ``.1`` generation kept). Metrics have no local default
  exporter (``OTEL_METRICS_EXPORTER=console`` prints them).
- **Resource.** ``service.name``, ``service.namespace=oab``, ``service.version``,
  ``service.instance.id``; on ECS (``ECS_CONTAINER_METADATA_URI_V4`` set) the task's attributes
  (``aws.ecs.task.arn``, ``aws.ecs.cluster.arn``, launch type, family, revision, log group) from
  ``opentelemetry-sdk-extension-aws``'s ``AwsEcsResourceDetector`` (PyPI, depends only on the
  SDK; a failed detection is logged and ignored: telemetry never stops the controller).
- **Every AWS call** is a CLIENT span from ``opentelemetry-instrumentation-botocore``
  (``rpc.system=aws-api``, ``rpc.service``, ``rpc.method``, ``aws.request_id``, status code).
  A response hook counts errors; a wrapper on botocore's standard retry handler counts every
  throttled *attempt*, including those botocore retried successfully. AWS calls made outside any
  span (idle claim polls, change-feed polls, lease renewals) are not sampled
  (:class:`OrphanAwsCallSampler`): they would be thousands of one-span traces a day that answer
  nothing; the spans that matter (apply, enqueue, reconcile and its steps, resync, leader
  acquire/release) carry their AWS calls as children.
- **Secrets** never reach this module by design (the controller reads secret versions, never
  values). :class:`ScrubbingSpanProcessor` is defence in depth in front of every exporter: it
  applies :func:`oab.controller.base.redact.scrub_data` to every attribute, event, link and status,
  the same rules :mod:`oab.controller.observability.logscrub` applies to log records (one list of
  credential shapes, credential-named keys, ``name=value`` assignments in free text, values
  registered with :func:`register_secret`).

Invariants: :func:`setup` never raises for a bad exporter or detector (it logs); every exporter
sits behind the scrubber; instruments are created at import with the API and bind to whatever
provider is installed.

Time model: span timestamps are the SDK's wall clock (nanoseconds); nothing here makes a
decision from time.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, cast

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes
from pydantic import BaseModel, ConfigDict, Field

from oab.controller.base.errors import THROTTLING_CODES
from oab.controller.base.redact import REDACTED, register_secret, scrub, scrub_data

__all__ = [
    "DEFAULT_TRACE_FILE",
    "REDACTED",
    "Instruments",
    "JsonLinesSpanExporter",
    "OrphanAwsCallSampler",
    "ScrubbingSpanProcessor",
    "Telemetry",
    "TelemetryConfig",
    "build_resource",
    "installed",
    "instruments",
    "register_secret",
    "scrub_value",
    "setup",
    "span_to_json",
    "step",
]

log = logging.getLogger("oab.controller.observability.telemetry")

#: The local trace file when neither ``OAB_TRACE_FILE`` nor an OTLP endpoint is set.
DEFAULT_TRACE_FILE = Path("~/.oab/traces.jsonl")
#: The local trace file is rotated (to ``.1``) past this size, so it never grows without bound.
TRACE_FILE_MAX_BYTES = 64 * 1024 * 1024

ServiceName = Literal["oab-controller", "oabctl"]
ExporterName = Literal["otlp", "file", "console", "none"]


# --------------------------------------------------------------------------- configuration


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class TelemetryConfig(BaseModel):
    """Telemetry settings of one process (validated once; see :meth:`from_env`).

    - ``service_name``: ``oab-controller`` for the daemon, ``oabctl`` for the CLI;
      ``OTEL_SERVICE_NAME`` overrides it.
    - ``instance_id`` (default none): ``service.instance.id``, the replica id for the daemon.
    - ``traces_exporter`` (default ``otlp`` with an endpoint, else ``file``).
    - ``metrics_exporter`` (default ``otlp`` with an endpoint, else ``none``).
    - ``otlp_traces_endpoint`` / ``otlp_metrics_endpoint``: full URLs (``.../v1/traces``);
      derived from ``OTEL_EXPORTER_OTLP_ENDPOINT`` as the specification says.
    - ``trace_file`` (default ``~/.oab/traces.jsonl``): the local JSON-lines file.
    - ``drop_orphan_aws_calls`` (default true): do not sample AWS calls made outside a span;
      false keeps every call (debugging the idle loops, at thousands of traces per hour).
    - ``instrument_botocore`` (default true): a CLIENT span per AWS call.
    - ``detect_ecs`` (default true): add the ECS task's resource attributes when on ECS.
    - ``disabled`` (``OTEL_SDK_DISABLED``): install nothing; every instrument is a no-op.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    service_name: str = Field(default="oab-controller", min_length=1)
    instance_id: str | None = None
    traces_exporter: ExporterName = "file"
    metrics_exporter: ExporterName = "none"
    otlp_traces_endpoint: str | None = None
    otlp_metrics_endpoint: str | None = None
    trace_file: Path | None = DEFAULT_TRACE_FILE
    drop_orphan_aws_calls: bool = True
    instrument_botocore: bool = True
    detect_ecs: bool = True
    disabled: bool = False

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        service_name: ServiceName,
        instance_id: str | None = None,
    ) -> TelemetryConfig:
        """Settings from the standard ``OTEL_*`` variables and ours (``OAB_TRACE_*``)."""
        e = os.environ if env is None else env
        base = (e.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").rstrip("/")
        traces_ep = e.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
            f"{base}/v1/traces" if base else None
        )
        metrics_ep = e.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or (
            f"{base}/v1/metrics" if base else None
        )
        traces = (e.get("OTEL_TRACES_EXPORTER") or ("otlp" if traces_ep else "file")).lower()
        metrics_ = (e.get("OTEL_METRICS_EXPORTER") or ("otlp" if metrics_ep else "none")).lower()
        raw_file = e.get("OAB_TRACE_FILE")
        trace_file: Path | None
        if raw_file is not None and raw_file.strip().lower() in ("", "off", "none"):
            trace_file = None
        else:
            trace_file = Path(raw_file).expanduser() if raw_file else DEFAULT_TRACE_FILE
        return cls(
            service_name=e.get("OTEL_SERVICE_NAME") or service_name,
            instance_id=instance_id,
            traces_exporter=traces,  # validated (Literal) by pydantic
            metrics_exporter=metrics_,
            otlp_traces_endpoint=traces_ep,
            otlp_metrics_endpoint=metrics_ep,
            trace_file=trace_file,
            drop_orphan_aws_calls=not _truthy(e.get("OAB_TRACE_ORPHAN_AWS_CALLS")),
            disabled=_truthy(e.get("OTEL_SDK_DISABLED")),
        )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("oab-controller")
    except Exception:  # not installed (a source checkout run without pip install)
        return "0+unknown"


def build_resource(config: TelemetryConfig) -> Resource:
    """The process's resource: service identity, ``OTEL_RESOURCE_ATTRIBUTES``, ECS task."""
    attrs: dict[str, Any] = {
        "service.name": config.service_name,
        "service.namespace": "oab",
        "service.version": _version(),
    }
    if config.instance_id:
        attrs["service.instance.id"] = config.instance_id
    resource = Resource.create(attrs)
    on_ecs = os.environ.get("ECS_CONTAINER_METADATA_URI_V4") or os.environ.get(
        "ECS_CONTAINER_METADATA_URI"
    )
    if config.detect_ecs and on_ecs:
        try:
            from opentelemetry.sdk.extension.aws.resource.ecs import AwsEcsResourceDetector

            resource = resource.merge(AwsEcsResourceDetector().detect())
        except Exception:  # a missing package or a metadata hiccup must not stop the process
            log.warning("ECS resource detection failed", exc_info=True)
    return resource


# ------------------------------------------------------------------------------ scrubbing

scrub_value = scrub  # the name spans and older callers use


def _scrub_attributes(attrs: Attributes) -> tuple[dict[str, Any], bool]:
    out: dict[str, Any] = {}
    changed = False
    for key, value in (attrs or {}).items():
        clean = scrub_data(value, key=key)
        before: Any = value
        if isinstance(value, Sequence) and not isinstance(value, str):
            before, clean = list(value), list(cast(Sequence[Any], clean))
        out[key] = clean
        changed |= clean != before
    return out, changed


class ScrubbingSpanProcessor(SpanProcessor):
    """Hands ``inner`` a copy of each ended span with secrets redacted (see module doc)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        """Forwarded unchanged (attributes are scrubbed once, at the end)."""
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Forward a scrubbed copy."""
        self._inner.on_end(scrub_span(span))

    def shutdown(self) -> None:
        """Shut the inner processor down."""
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner processor."""
        return self._inner.force_flush(timeout_millis)


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` with redacted attributes, events, links and status (or ``span``)."""
    attrs, changed = _scrub_attributes(span.attributes)
    events = []
    for ev in span.events:
        ev_attrs, ev_changed = _scrub_attributes(ev.attributes)
        changed |= ev_changed
        events.append(Event(ev.name, ev_attrs, ev.timestamp) if ev_changed else ev)
    links = []
    for link in span.links:
        l_attrs, l_changed = _scrub_attributes(link.attributes)
        changed |= l_changed
        links.append(Link(link.context, l_attrs) if l_changed else link)
    status = span.status
    if status.description:
        desc = scrub_value(status.description)
        if desc != status.description:
            changed = True
            status = trace.Status(status.status_code, desc)
    if not changed:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attrs,
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


# ------------------------------------------------------------------------------ sampling


class OrphanAwsCallSampler(Sampler):
    """Root sampler: drop AWS SDK calls that have no parent span, keep everything else."""

    def should_sample(  # noqa: PLR0917  (the Sampler interface is positional)
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        """DROP a parentless ``rpc.system=aws-api`` span; RECORD_AND_SAMPLE otherwise."""
        if kind is SpanKind.CLIENT and (attributes or {}).get("rpc.system") == "aws-api":
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        """Sampler name shown by the SDK."""
        return "OrphanAwsCallSampler"


# ----------------------------------------------------------------------- JSON-lines exporter


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def span_to_json(span: ReadableSpan) -> dict[str, Any]:
    """One span as the JSON object the local trace file holds (read by ``oabctl trace``)."""
    ctx = span.context
    assert ctx is not None
    return {
        "trace_id": _hex(ctx.trace_id, 32),
        "span_id": _hex(ctx.span_id, 16),
        "parent_span_id": _hex(span.parent.span_id, 16) if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description or "",
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
        "links": [
            {
                "trace_id": _hex(link.context.trace_id, 32),
                "span_id": _hex(link.context.span_id, 16),
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ],
        "service": str(span.resource.attributes.get("service.name", "")),
        "instance": str(span.resource.attributes.get("service.instance.id", "")),
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends spans to a JSON-lines file (one ``write`` per batch, ``O_APPEND``).

    Several processes (daemons, ``oabctl``) may share one file: each batch is written with a
    single append, so lines do not interleave on a local file system.
    """

    def __init__(self, path: Path, *, max_bytes: int = TRACE_FILE_MAX_BYTES) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append ``spans``; FAILURE (logged) if the file cannot be written."""
        data = "".join(json.dumps(span_to_json(s), default=str) + "\n" for s in spans)
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._rotate()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, data.encode())
                finally:
                    os.close(fd)
        except OSError:
            log.warning("cannot write trace file %s", self.path, exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _rotate(self) -> None:
        try:
            if self.path.stat().st_size >= self._max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            pass

    def shutdown(self) -> None:
        """Nothing to release (the file is opened per batch)."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Writes are synchronous."""
        return True


def read_spans(path: Path) -> Iterator[dict[str, Any]]:
    """Spans from a local trace file and its rotated ``.1`` (skips torn or foreign lines)."""
    for candidate in (path.with_name(path.name + ".1"), path):
        try:
            handle = candidate.open(encoding="utf-8")
        except FileNotFoundError:
            continue
        with handle:
            for line in handle:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict) and "trace_id" in obj and "span_id" in obj:
                    yield obj


# ---------------------------------------------------------------------------- instruments


class Instruments:
    """The controller's own metrics (API only; see ``ops/metrics.md``)."""

    def __init__(self) -> None:
        m = metrics.get_meter("oab.controller")
        self._lock = threading.Lock()
        self._phases: dict[str, int] = {}
        self._secret_failures: int | None = None
        self.reconcile_runs = m.create_counter(
            "oab.reconcile.runs",
            unit="{run}",
            description="Reconcile runs by outcome (done|requeue|retry|park|drop) and reason.",
        )
        self.reconcile_duration = m.create_histogram(
            "oab.reconcile.duration", unit="s", description="Duration of one reconcile run."
        )
        self.aws_calls = m.create_counter(
            "oab.aws.calls", unit="{call}", description="AWS API calls by service and operation."
        )
        self.aws_errors = m.create_counter(
            "oab.aws.errors",
            unit="{call}",
            description="AWS API calls that failed after botocore's retries, by error code.",
        )
        self.aws_throttles = m.create_counter(
            "oab.aws.throttles",
            unit="{attempt}",
            description="Throttled AWS request attempts (retried or not).",
        )
        self.fenced_writes_rejected = m.create_counter(
            "oab.fence.rejected_writes",
            unit="{write}",
            description="Writes made on a leader's authority rejected by the fence (stale epoch).",
        )
        # The work queue counts its unreadable rows under the same name (meter oab.queue).
        self.poison_items = m.create_counter(
            "oab.poison.items",
            unit="{item}",
            description="Unreadable or refused stored items met (skipped, parked or reported), "
            "by oab.table and oab.kind.",
        )
        self.loop_errors = m.create_counter(
            "oab.loop.errors",
            unit="{error}",
            description="Unexpected errors a control loop caught and survived, by oab.loop.",
        )
        m.create_observable_gauge(
            "oab.agents",
            callbacks=[self._observe_phases],
            unit="{agent}",
            description="Agents by phase at the leader's last resync.",
        )
        m.create_observable_gauge(
            "oab.agents.secret_injection_failed",
            callbacks=[self._observe_secret_failures],
            unit="{agent}",
            description="Agents whose SecretInjectionFailed condition is True (last resync).",
        )

    def record_agents(self, phases: Mapping[str, int], *, secret_injection_failed: int) -> None:
        """Remember the agent census of a resync for the gauges."""
        with self._lock:
            self._phases = dict(phases)
            self._secret_failures = secret_injection_failed

    def _observe_phases(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            return [Observation(n, {"oab.phase": p}) for p, n in self._phases.items()]

    def _observe_secret_failures(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            n = self._secret_failures
        return [] if n is None else [Observation(n)]


#: The process's instruments (bound to whatever provider is installed).
instruments = Instruments()

_step_tracer = trace.get_tracer("oab.controller.reconcile.reconciler")


@contextmanager
def step(
    name: str, attributes: Mapping[str, str | int | bool] | None = None
) -> Iterator[trace.Span]:
    """A span ``reconcile.<name>`` around one reconcile step (exceptions become events)."""
    with _step_tracer.start_as_current_span(
        f"reconcile.{name}", attributes=dict(attributes or {})
    ) as span:
        yield span


# ---------------------------------------------------------------------- botocore hooks


def _aws_response_hook(span: Any, service: str, operation: str, result: Any) -> None:
    attrs = {"rpc.service": span_service(span, service), "rpc.method": operation}
    instruments.aws_calls.add(1, attrs)
    error = (result or {}).get("Error") if isinstance(result, Mapping) else None
    if error:
        code = str(error.get("Code", "")) or "Unknown"
        instruments.aws_errors.add(1, {**attrs, "error.type": code})
        if span.is_recording():
            span.set_attribute("aws.error.code", code)
            span.set_attribute("error.type", code)


def span_service(span: Any, default: str) -> str:
    """The ``rpc.service`` the instrumentation put on ``span`` (e.g. ``ECS``)."""
    attrs = getattr(span, "attributes", None) or {}
    return str(attrs.get("rpc.service", default))


def _count_throttled_attempt(
    wrapped: Callable[..., Any], _instance: Any, args: Any, kwargs: Any
) -> Any:
    try:
        response = kwargs.get("response")
        parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else None
        code = str(((parsed or {}).get("Error") or {}).get("Code", ""))
        status = int(((parsed or {}).get("ResponseMetadata") or {}).get("HTTPStatusCode", 0))
        if code in THROTTLING_CODES or status == 429:
            op = kwargs.get("operation")
            service = str(getattr(getattr(op, "service_model", None), "service_id", "") or "")
            instruments.aws_throttles.add(
                1, {"rpc.service": service, "rpc.method": str(getattr(op, "name", ""))}
            )
    except Exception:  # counting must never break a call
        log.debug("throttle count failed", exc_info=True)
    return wrapped(*args, **kwargs)


def _instrument_botocore(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    if _state.botocore:
        return
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from wrapt import wrap_function_wrapper

    BotocoreInstrumentor().instrument(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        response_hook=_aws_response_hook,
    )
    wrap_function_wrapper(
        "botocore.retries.standard", "RetryHandler.needs_retry", _count_throttled_attempt
    )
    _state.botocore = True


# ------------------------------------------------------------------------------- the handle


class Telemetry:
    """The installed providers of this process (see :func:`setup`)."""

    def __init__(
        self,
        config: TelemetryConfig,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
    ) -> None:
        self.config = config
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider

    @property
    def enabled(self) -> bool:
        """False when ``OTEL_SDK_DISABLED`` left the API's no-op providers in place."""
        return self.tracer_provider is not None

    def add_span_exporter(self, exporter: SpanExporter, *, batch: bool = False) -> None:
        """Export every later span to ``exporter`` too (behind the scrubber)."""
        if self.tracer_provider is None:
            return
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        inner: SpanProcessor = (
            BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        )
        self.tracer_provider.add_span_processor(ScrubbingSpanProcessor(inner))

    def add_metric_reader(self, reader: MetricReader) -> None:
        """Read the process's metrics with ``reader`` too (tests: ``InMemoryMetricReader``)."""
        if self.meter_provider is not None:
            self.meter_provider.add_metric_reader(reader)

    def remove_metric_reader(self, reader: MetricReader) -> None:
        """Stop reading with ``reader``."""
        if self.meter_provider is not None:
            self.meter_provider.remove_metric_reader(reader)

    def flush(self, *, timeout_s: float = 2.0) -> None:
        """Export what is buffered (``oabctl`` calls this before it exits)."""
        millis = int(timeout_s * 1000)
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush(millis)
        if self.meter_provider is not None:
            self.meter_provider.force_flush(millis)


class _State:
    """What this process installed (one global provider per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handle: Telemetry | None = None
        self.botocore = False


_state = _State()


def installed() -> Telemetry | None:
    """The handle :func:`setup` installed in this process, if any."""
    return _state.handle


def setup(config: TelemetryConfig) -> Telemetry:
    """Install the global tracer and meter providers once per process (see module doc)."""
    with _state.lock:
        if _state.handle is not None:
            return _state.handle
        if config.disabled:
            _state.handle = Telemetry(config, None, None)
            return _state.handle
        resource = build_resource(config)
        root: Sampler = OrphanAwsCallSampler() if config.drop_orphan_aws_calls else _AlwaysOn()
        tracer_provider = TracerProvider(resource=resource, sampler=ParentBased(root=root))
        readers = _metric_readers(config)
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        handle = Telemetry(config, tracer_provider, meter_provider)
        for exporter in _span_exporters(config):
            handle.add_span_exporter(exporter, batch=True)
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        if config.instrument_botocore:
            try:
                _instrument_botocore(tracer_provider, meter_provider)
            except Exception:
                log.warning("botocore instrumentation unavailable", exc_info=True)
        _state.handle = handle
        return handle


class _AlwaysOn(Sampler):
    def should_sample(  # noqa: PLR0917  (the Sampler interface is positional)
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "AlwaysOn"


def _span_exporters(config: TelemetryConfig) -> list[SpanExporter]:
    kind = config.traces_exporter
    try:
        if kind == "otlp" and config.otlp_traces_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return [OTLPSpanExporter(endpoint=config.otlp_traces_endpoint)]
        if kind == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return [ConsoleSpanExporter()]
        if kind in ("file", "otlp") and config.trace_file is not None:
            # "otlp" without an endpoint falls back to the local file: traces always exist.
            return [JsonLinesSpanExporter(config.trace_file.expanduser())]
    except Exception:
        log.warning("span exporter %s unavailable", kind, exc_info=True)
    return []


def _metric_readers(config: TelemetryConfig) -> list[MetricReader]:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    kind = config.metrics_exporter
    try:
        if kind == "otlp" and config.otlp_metrics_endpoint:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            return [
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=config.otlp_metrics_endpoint)
                )
            ]
        if kind == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            return [PeriodicExportingMetricReader(ConsoleMetricExporter())]
    except Exception:
        log.warning("metric exporter %s unavailable", kind, exc_info=True)
    return []


#: ``oabctl`` commands that get no root span (long-running, or reading traces themselves).
UNTRACED_COMMANDS = frozenset({"local", "trace"})
_cli_tracer = trace.get_tracer("oab.controller.cli.main")


@contextmanager
def command_span(command: str, *, env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Set ``oabctl``'s telemetry up and run one command inside its root span ``oabctl NAME``.

    The span's context is what ``oabctl apply`` stores with each change record, so it is the
    root of every trace that change causes. Spans are flushed before the command returns.
    """
    if command in UNTRACED_COMMANDS:
        yield
        return
    handle = setup(TelemetryConfig.from_env(env, service_name="oabctl"))
    try:
        with _cli_tracer.start_as_current_span(
            f"oabctl {command}", attributes={"oab.command": command}
        ):
            yield
    finally:
        handle.flush()
