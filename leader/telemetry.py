"""OpenTelemetry instruments of the leader package (API only: the host process sets up the SDK).

Metrics (attributes ``oab.replica``, ``oab.lease``):

- ``oab.leader.is_leader`` (gauge, 0/1) and ``oab.leader.epoch`` (gauge; 0 when not leading);
- ``oab.leader.transitions`` (counter; attribute ``oab.leader.transition`` = started|stopped);
- ``oab.leader.seconds_since_renew`` (gauge; leaders only: age of the last successful renewal,
  measured from its send time);
- ``oab.leader.seconds_without_leader`` (gauge; standbys only: how long the lease has been seen
  released or absent, 0 while someone holds it).

Spans: ``oab.leader.acquire``, ``oab.leader.release``; span events ``renew_failed`` and
``step_down`` on short ``oab.leader.renew`` / ``oab.leader.step_down`` spans.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Protocol

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

tracer = trace.get_tracer("oab.leader")
_meter = metrics.get_meter("oab.leader")


class Observed(Protocol):
    """What an elector exposes to the metric callbacks."""

    def metric_attributes(self) -> dict[str, str]:
        """Attributes identifying the replica and lease."""
        ...

    def metric_values(self) -> dict[str, float | None]:
        """Current gauge values by metric name (``None``: not applicable now)."""
        ...


_sources: weakref.WeakSet[Observed] = weakref.WeakSet()
_lock = threading.Lock()


def register(source: Observed) -> None:
    """Report ``source``'s gauges until it is garbage collected."""
    with _lock:
        _sources.add(source)


def _observe(name: str) -> Iterable[Observation]:
    with _lock:
        sources = list(_sources)
    for source in sources:
        value = source.metric_values().get(name)
        if value is not None:
            yield Observation(value, source.metric_attributes())


def _callback(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        return list(_observe(name))

    return callback


IS_LEADER = "oab.leader.is_leader"
EPOCH = "oab.leader.epoch"
SECONDS_SINCE_RENEW = "oab.leader.seconds_since_renew"
SECONDS_WITHOUT_LEADER = "oab.leader.seconds_without_leader"

for _name, _unit, _desc in (
    (IS_LEADER, "1", "1 while this replica leads"),
    (EPOCH, "1", "fencing epoch of the current term (0 when not leading)"),
    (SECONDS_SINCE_RENEW, "s", "seconds since the last successful renewal was sent"),
    (SECONDS_WITHOUT_LEADER, "s", "seconds the lease has been seen released or absent"),
):
    _meter.create_observable_gauge(
        _name,
        callbacks=[_callback(_name)],
        unit=_unit,
        description=_desc,
    )

transitions = _meter.create_counter(
    "oab.leader.transitions",
    unit="1",
    description="leadership transitions of this replica (started or stopped leading)",
)
