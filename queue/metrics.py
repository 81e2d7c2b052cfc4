"""Work-queue metrics through the OpenTelemetry API only (the SDK and exporter are the
application's choice; without one every instrument is a no-op).

Counters and histograms are recorded as operations happen. Depth by state, parked count and the
oldest ready age need a table scan, so they are observable gauges that report the snapshot taken
by the last ``WorkQueue.depth_by_state()``; callbacks never do I/O on the exporter's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

METER_NAME = "oab.queue"


class QueueMetrics:
    """The instruments of one work queue."""

    def __init__(self, meter: Meter | None = None) -> None:
        m = meter or metrics.get_meter(METER_NAME)
        self._lock = threading.Lock()
        self._depth: dict[str, int] = {}
        self._oldest_ready_age: float | None = None
        self.adds = m.create_counter(
            "oab.queue.adds", unit="{request}", description="Enqueue requests, by outcome."
        )
        self.coalesced = m.create_counter(
            "oab.queue.coalesced_adds",
            unit="{request}",
            description="Enqueues merged into pending or in-flight work (no new unit).",
        )
        self.queue_latency = m.create_histogram(
            "oab.queue.latency", unit="s", description="Time from ready to claim."
        )
        self.work_duration = m.create_histogram(
            "oab.queue.work_duration", unit="s", description="Claim to outcome, by result."
        )
        self.retries = m.create_counter(
            "oab.queue.retries", unit="{unit}", description="Retryable failures (backoff set)."
        )
        self.claim_expiries = m.create_counter(
            "oab.queue.claim_expiries",
            unit="{claim}",
            description="Expired claims taken over by another claim (crash recovery).",
        )
        self.claims_lost = m.create_counter(
            "oab.queue.claims_lost",
            unit="{claim}",
            description="Writes rejected because the claim had been taken over (stale workers).",
        )
        self.parked = m.create_counter(
            "oab.queue.parks", unit="{unit}", description="Rows parked by a terminal error."
        )
        # One name for every unreadable stored item the control plane meets (the controller
        # counts its own kinds under its meter): alert on any increase.
        self.poison = m.create_counter(
            "oab.poison.items",
            unit="{item}",
            description="Unreadable stored items met (skipped or quarantined), by table and kind.",
        )
        m.create_observable_gauge(
            "oab.queue.depth",
            callbacks=[self._observe_depth],
            unit="{unit}",
            description="Rows by state at the last depth snapshot.",
        )
        m.create_observable_gauge(
            "oab.queue.parked",
            callbacks=[self._observe_parked],
            unit="{unit}",
            description="Parked rows at the last depth snapshot.",
        )
        m.create_observable_gauge(
            "oab.queue.oldest_ready_age",
            callbacks=[self._observe_oldest],
            unit="s",
            description="Age of the longest-waiting due row at the last depth snapshot.",
        )

    def unreadable_row(self) -> None:
        """Count one unreadable work-unit row met (then quarantined, or left for the next try)."""
        self.poison.add(1, {"oab.table": "queue", "oab.kind": "row"})

    def record_depth(self, depth: Mapping[str, int], *, oldest_ready_age: float | None) -> None:
        """Remember a depth snapshot for the gauges."""
        with self._lock:
            self._depth = dict(depth)
            self._oldest_ready_age = oldest_ready_age

    def _observe_depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            return [Observation(n, {"state": s}) for s, n in self._depth.items()]

    def _observe_parked(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            return [Observation(self._depth.get("parked", 0))] if self._depth else []

    def _observe_oldest(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            age = self._oldest_ready_age
        return [] if age is None else [Observation(age)]
