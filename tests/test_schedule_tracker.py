"""The leader's schedule tracker: reads once per generation, a heap of transitions, catch-up.

Pure tests: the manifests come from an in-memory implementation of the reconciler's
``Manifests`` protocol (the tracker's only input besides the clock), 1,000 agents included.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import yaml

from oab.controller.api.document import parse_document
from oab.controller.api.service import AgentKey, OABService
from oab.controller.core.status import AgentStatus, Condition
from oab.controller.reconcile.reconciler import Manifest
from oab.controller.runtime.schedules import ScheduleTracker
from oab.controller.testing import FakeClock, agent_manifest

OFF = {"name": "off", "expr": "cron(0 22 * * ? *)", "replicas": 0}
ON = {"name": "on", "expr": "cron(0 6 * * ? *)", "replicas": 1}
DAY0 = datetime(2027, 1, 4, 12, tzinfo=UTC).timestamp()  # a Monday, noon UTC


@dataclass
class Manifests:
    """Stored manifests by key, counting reads (the ``Manifests`` protocol)."""

    stored: dict[str, Manifest] = field(default_factory=dict)
    reads: int = 0

    def read(self, key: AgentKey) -> Manifest | None:
        self.reads += 1
        return self.stored.get(key)

    def remove(self, manifest: Manifest) -> None:
        raise AssertionError("the tracker never removes manifests")

    def put(self, key: str, *, etag: str, generation: int = 1, **spec: Any) -> None:
        ns, name = key.split("/")
        doc: dict[str, Any] = yaml.safe_load(agent_manifest(name, namespace=ns))
        doc["metadata"]["generation"] = generation
        doc["spec"].update(spec)
        obj = parse_document(doc)
        assert isinstance(obj, OABService)
        self.stored[key] = Manifest(service=obj, etag=etag, deleted=False)


def _status(key: str, *, phase: str, etag: str, scheduled: bool) -> AgentStatus:
    conds = (
        (
            Condition(
                type="Scheduled",
                status="True",
                reason="NextTransition",
                message="",
                last_transition_time="",
            ),
        )
        if scheduled
        else ()
    )
    return AgentStatus(key=key, phase=phase, manifest_etag=etag, conditions=conds)  # type: ignore[arg-type]


def test_one_read_per_generation_and_none_for_agents_without_schedules() -> None:
    clock = FakeClock(wall=DAY0)
    manifests = Manifests()
    tracker = ScheduleTracker(manifests=manifests, wall=clock.time)
    etags, statuses = {}, {}
    for i in range(1000):
        key = f"team/a{i}"
        scheduled = i % 2 == 0
        if scheduled:
            manifests.put(key, etag=f"e{i}", schedules=[OFF, ON])
        else:
            manifests.put(key, etag=f"e{i}")
        etags[key] = f"e{i}"
        statuses[key] = _status(key, phase="Running", etag=f"e{i}", scheduled=scheduled)

    assert tracker.resync(etags=etags, statuses=statuses, now=clock.time()) == []
    assert manifests.reads == 500  # only the agents whose status says "Scheduled"
    assert tracker.stats.plans_built == 500
    tracker.resync(etags=etags, statuses=statuses, now=clock.time())
    assert manifests.reads == 500  # nothing changed: no read at all

    # One day of the leader's loop: each scheduled agent turns off at 22:00 and on at 06:00.
    enqueued: list[tuple[str, float]] = []
    for _ in range(24 * 60):
        clock.advance(60)
        enqueued += [(d.key, d.at) for d in tracker.due(clock.time())]
    off_at = datetime(2027, 1, 4, 22, tzinfo=UTC).timestamp()
    on_at = datetime(2027, 1, 5, 6, tzinfo=UTC).timestamp()
    assert len(enqueued) == 1000
    assert {at for _key, at in enqueued} == {off_at, on_at}
    assert len(set(enqueued)) == 1000  # each (agent, transition) exactly once
    assert manifests.reads == 500  # firing transitions reads nothing
    assert tracker.stats.heap_pushes == 500 * 3  # the first plan, then one push per firing

    # A new generation of one agent (on at 07:00): one read; its old heap entry goes stale.
    later = {**ON, "expr": "cron(0 7 * * ? *)"}
    manifests.put("team/a0", etag="e0-2", generation=2, schedules=[OFF, later])
    tracker.refresh("team/a0")
    assert manifests.reads == 501
    clock.advance(24 * 3600)
    fired = [(d.key, d.at, d.generation) for d in tracker.due(clock.time())]
    mine = sorted((at, gen) for key, at, gen in fired if key == "team/a0")
    assert mine == [
        (datetime(2027, 1, 5, 22, tzinfo=UTC).timestamp(), 2),
        (datetime(2027, 1, 6, 7, tzinfo=UTC).timestamp(), 2),
    ]
    assert len(fired) == 1000


def test_a_new_leader_enqueues_a_passed_transition_with_the_old_leaders_token() -> None:
    clock = FakeClock(wall=datetime(2027, 1, 4, 21, 59, 59, tzinfo=UTC).timestamp())
    manifests = Manifests()
    manifests.put("team/bot", etag="e1", schedules=[OFF, ON])
    statuses = {"team/bot": _status("team/bot", phase="Running", etag="e1", scheduled=True)}
    old = ScheduleTracker(manifests=manifests, wall=clock.time)
    old.resync(etags={"team/bot": "e1"}, statuses=statuses, now=clock.time())
    clock.advance(1.5)  # 22:00:00.5
    [fired] = old.due(clock.time())
    # The old leader is fenced out before its enqueue lands; a new one starts from nothing.
    new = ScheduleTracker(manifests=manifests, wall=clock.time)
    [caught] = new.resync(etags={"team/bot": "e1"}, statuses=statuses, now=clock.time())
    assert (caught.key, caught.at, caught.schedule) == (fired.key, fired.at, "off")
    assert caught.token == fired.token
    assert caught.origin.reason() == "schedule@2027-01-04T22:00:00Z"
    assert new.due(clock.time()) == []  # the passed transition is not in the heap as well
    # Once the status shows it applied (Suspended), the catch-up finds nothing.
    applied = {"team/bot": replace(statuses["team/bot"], phase="Suspended")}
    assert new.resync(etags={"team/bot": "e1"}, statuses=applied, now=clock.time()) == []


def test_deleted_and_unreadable_manifests_are_dropped_or_skipped() -> None:
    clock = FakeClock(wall=DAY0)
    manifests = Manifests()
    manifests.put("team/bot", etag="e1", schedules=[OFF, ON])
    tracker = ScheduleTracker(manifests=manifests, wall=clock.time)
    tracker.refresh("team/bot")
    assert tracker.tracked == 1
    tracker.resync(etags={}, statuses={}, now=clock.time())  # the manifest is gone
    assert tracker.tracked == 0
    clock.advance(24 * 3600)
    assert tracker.due(clock.time()) == []
