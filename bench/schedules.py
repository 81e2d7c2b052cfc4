"""The leader's cost of spec.schedules per resync, with and without schedules (README, Scheduler).

What schedules add to a resync is the tracker's work (``oab.controller.runtime.schedules``): the
manifest reads (one S3 GetObject each), the plans built and the CPU time of comparing 1,000
agents' ETags and levels; the rest of the resync (ListObjectsV2, the status Scan,
DescribeServices) is unchanged and measured by ``bench/control_plane_cost.py``. So this bench
runs the tracker alone, in process, against an in-memory implementation of the reconciler's
``Manifests`` protocol that counts reads, for ``AGENTS`` agents of which 0 %, 50 % and 100 %
carry two daily schedules (off at 22:00, on at 06:00 UTC):

1. the first resync after a takeover (cold: every scheduled agent's manifest is read once);
2. a steady resync (warm: nothing changed, nothing read);
3. one simulated day of the leader's loop (a ``due`` call per 0.5 s poll): the transitions
   enqueued and the heap pushes.

Prints a table, then ONE line of JSON. No AWS, no emulator: a few seconds of CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from oab.controller.api.document import parse_document
from oab.controller.api.service import AgentKey, OABService
from oab.controller.core.status import AgentStatus, Condition
from oab.controller.reconcile.reconciler import Manifest
from oab.controller.runtime.schedules import ScheduleTracker
from oab.controller.testing import FakeClock, agent_manifest

AGENTS = 1000
POLL_S = 0.5
DAY0 = datetime(2027, 1, 4, 12, tzinfo=UTC).timestamp()
SCHEDULES = [
    {"name": "off", "expr": "cron(0 22 * * ? *)", "replicas": 0},
    {"name": "on", "expr": "cron(0 6 * * ? *)", "replicas": 1},
]


@dataclass
class Manifests:
    """Stored manifests by key, counting reads."""

    stored: dict[str, Manifest] = field(default_factory=dict)
    reads: int = 0

    def read(self, key: AgentKey) -> Manifest | None:
        self.reads += 1
        return self.stored.get(key)

    def remove(self, manifest: Manifest) -> None:
        raise AssertionError("never called by the tracker")


def _fleet(share: float) -> tuple[Manifests, dict[str, str], dict[str, AgentStatus]]:
    base: dict[str, Any] = yaml.safe_load(agent_manifest())
    manifests, etags, statuses = Manifests(), {}, {}
    scheduled_every = round(1 / share) if share else 0
    for i in range(AGENTS):
        key = f"team/a{i}"
        scheduled = bool(scheduled_every) and i % scheduled_every == 0
        doc = json.loads(json.dumps(base))
        doc["metadata"]["name"] = f"a{i}"
        doc["metadata"]["generation"] = 1
        if scheduled:
            doc["spec"]["schedules"] = SCHEDULES
        obj = parse_document(doc)
        assert isinstance(obj, OABService)
        manifests.stored[key] = Manifest(service=obj, etag=f"e{i}", deleted=False)
        etags[key] = f"e{i}"
        marker = Condition(
            type="Scheduled",
            status="True",
            reason="NextTransition",
            message="",
            last_transition_time="",
        )
        statuses[key] = AgentStatus(
            key=key,
            phase="Running",
            manifest_etag=f"e{i}",
            conditions=(marker,) if scheduled else (),
        )
    return manifests, etags, statuses


def _measure(share: float) -> dict[str, Any]:
    manifests, etags, statuses = _fleet(share)
    clock = FakeClock(wall=DAY0)
    tracker = ScheduleTracker(manifests=manifests, wall=clock.time)
    started = time.perf_counter()
    tracker.resync(etags=etags, statuses=statuses, now=clock.time())
    cold_s = time.perf_counter() - started
    cold_reads = manifests.reads
    started = time.perf_counter()
    tracker.resync(etags=etags, statuses=statuses, now=clock.time())
    warm_s = time.perf_counter() - started
    warm_reads = manifests.reads - cold_reads
    enqueued = 0
    started = time.perf_counter()
    polls = int(24 * 3600 / POLL_S)
    for _ in range(polls):
        clock.advance(POLL_S)
        enqueued += len(tracker.due(clock.time()))
    day_s = time.perf_counter() - started
    return {
        "scheduled_share": share,
        "tracked": tracker.tracked,
        "cold_resync_reads": cold_reads,
        "cold_resync_ms": round(cold_s * 1000, 1),
        "warm_resync_reads": warm_reads,
        "warm_resync_ms": round(warm_s * 1000, 2),
        "warm_resync_us_per_agent": round(warm_s * 1e6 / AGENTS, 2),
        "day_enqueues": enqueued,
        "day_heap_pushes": tracker.stats.heap_pushes,
        "day_due_polls": polls,
        "day_due_us_per_poll": round(day_s * 1e6 / polls, 2),
    }


def main() -> None:
    """Run the three shares and print the table and one JSON line."""
    rows = [_measure(share) for share in (0.0, 0.5, 1.0)]
    print(f"{AGENTS} agents; daily schedules off 22:00 / on 06:00 UTC; one due() per {POLL_S} s")
    header = (
        "share", "cold reads", "cold ms", "warm reads", "warm us/agent", "day enqueues",
        "due us/poll",
    )  # fmt: skip
    print("  ".join(f"{h:>13}" for h in header))
    for r in rows:
        values = (
            r["scheduled_share"], r["cold_resync_reads"], r["cold_resync_ms"],
            r["warm_resync_reads"], r["warm_resync_us_per_agent"], r["day_enqueues"],
            r["day_due_us_per_poll"],
        )  # fmt: skip
        print("  ".join(f"{v:>13}" for v in values))
    print(json.dumps({"bench": "schedules", "agents": AGENTS, "rows": rows}))


if __name__ == "__main__":
    main()
