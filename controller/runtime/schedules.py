"""The leader's schedule tracker: which agent's desired count changes next, and when.

Design
------
The desired count is a pure function of ``(spec, instant)`` (:mod:`oab.controller.core.schedule`)
and the reconciler applies it on every run. What remains is *waking the reconciler up* when it
changes. The leader's scheduler (:mod:`oab.controller.runtime.scheduler`) owns that, through this
tracker, with no EventBridge and no Lambda:

- **A plan per manifest generation.** The tracker keeps, per agent, the ETag of the manifest it
  last read and the parsed :class:`~oab.controller.core.schedule.Plan`. A manifest is read (one
  GetObject) only when its ETag is new to the tracker *and* the agent can have schedules: a
  change record was polled for it, or it has no status yet, or its status carries the
  ``Scheduled`` condition or phase ``Suspended`` (both set by the reconciler), or its status has
  not seen this ETag yet. An agent without schedules therefore costs a read only when a new
  generation of it is applied; a scheduled agent costs one read per generation and one per
  leader takeover.
- **A heap of next transitions.** Each plan contributes its next transition instant; the loop
  pops what is due (``due``, an O(1) peek per iteration, O(log n) per transition) and pushes
  the plan's following transition. Entries of a replaced plan are skipped when popped (their
  plan version no longer matches) and compacted away when they outnumber the live ones.
- **Fenced, idempotent enqueues.** The scheduler enqueues each due transition like every other
  unit, with the leader's fence, token ``idempotency_token(key, 0, <instant>, "schedule")`` and
  reason ``schedule@<instant>``: a deposed leader cannot enqueue, and two leaders (or a
  leader's pop and its resync) enqueuing the same transition write one unit (``duplicate``).
- **No miss across failover.** A new leader starts with an empty heap; its first resync reads
  the plans of the scheduled agents and compares each plan's level *now* with the agent's
  status (``Suspended`` <=> 0). A transition whose instant passed since the last one applied is
  enqueued at once, with the same token the old leader would have used. Only then are future
  transitions pushed on the heap.
- **Bad data never stops the loop.** A manifest that cannot be read or parsed is skipped for
  this round (logged and counted); the reconciler parks it with the reason.

Time model: instants are wall-clock POSIX seconds from the injected ``wall`` (the leader's host
clock). A worker evaluates a ``schedule@`` unit at ``max(its clock, the instant)`` so a small
skew between hosts cannot make it read the transition as not yet due.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from oab.controller.api.service import AgentKey
from oab.controller.base.errors import OabError
from oab.controller.core.outcome import Cause, Origin
from oab.controller.core.schedule import Level, Plan
from oab.controller.core.status import AgentStatus, iso
from oab.controller.reconcile.reconciler import Manifests
from oab.queue.workqueue import idempotency_token

__all__ = ["Due", "ScheduleTracker", "TrackerStats"]

log = logging.getLogger("oab.controller.runtime.schedules")


@dataclass(frozen=True, kw_only=True)
class Due:
    """A transition to enqueue: ``key`` at ``generation``, for the instant ``at``."""

    key: str
    generation: int
    at: float
    schedule: str

    @property
    def token(self) -> str:
        """Deterministic in (key, instant): every leader derives the same one."""
        return idempotency_token(self.key, 0, iso(self.at), "schedule")

    @property
    def origin(self) -> Origin:
        """Cause ``schedule`` at the instant (stored ``schedule@<instant>``): the reconciler
        evaluates the level at that instant at least."""
        return Origin(cause=Cause.SCHEDULE, at=self.at)


@dataclass
class TrackerStats:
    """What the tracker did since it was made (tests and ``bench/schedules.py`` read it)."""

    manifest_reads: int = 0
    plans_built: int = 0
    read_failures: int = 0
    heap_pushes: int = 0
    due: int = 0
    catch_up: int = 0


@dataclass(frozen=True, kw_only=True)
class _Known:
    etag: str
    generation: int
    plan: Plan
    version: int


@dataclass(order=True)
class _Entry:
    at: float
    key: str = field(compare=False)
    version: int = field(compare=False)
    schedule: str = field(compare=False)


class ScheduleTracker:
    """Plans and next transitions of the scheduled agents (see the module docstring).

    Not thread-safe: the scheduler's single loop owns it.
    """

    def __init__(self, *, manifests: Manifests, wall: Callable[[], float]) -> None:
        self._manifests = manifests
        self._wall = wall
        self._known: dict[str, _Known] = {}
        self._heap: list[_Entry] = []
        #: key -> (valid from, valid until, level): a level holds until the plan's next
        #: transition, so a warm resync recomputes none (see ``_level``).
        self._levels: dict[str, tuple[float, float, Level]] = {}
        self._version = 0
        self.stats = TrackerStats()

    # ---------------------------------------------------------------------------- reads
    def refresh(self, key: str, *, etag: str | None = None) -> None:
        """Read ``key``'s manifest and re-plan it (unless ``etag`` is the one already planned).

        A read that fails is logged and counted; the next resync tries again.
        """
        known = self._known.get(key)
        if etag is not None and known is not None and known.etag == etag:
            return
        self.stats.manifest_reads += 1
        try:
            manifest = self._manifests.read(AgentKey(key))
        except OabError as exc:
            self.stats.read_failures += 1
            log.warning("schedules: cannot read the manifest of %s: %s", key, exc)
            return
        if manifest is None or manifest.deleted:
            self.forget(key)
            return
        if known is not None and known.etag == manifest.etag:
            return
        plan = Plan.of(manifest.service.spec)
        self.stats.plans_built += 1
        self._version += 1
        self._known[key] = _Known(
            etag=manifest.etag,
            generation=int(manifest.service.metadata.generation or 0),
            plan=plan,
            version=self._version,
        )
        self._levels.pop(key, None)
        self._push(key, after=self._wall())

    def forget(self, key: str) -> None:
        """Drop ``key`` (deleted); its heap entries are skipped when popped."""
        self._known.pop(key, None)
        self._levels.pop(key, None)

    def _level(self, key: str, known: _Known, now: float) -> Level:
        cached = self._levels.get(key)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2]
        level = known.plan.level(now)
        upcoming = known.plan.next_transition(now)
        self._levels[key] = (now, upcoming.at if upcoming else math.inf, level)
        return level

    # ---------------------------------------------------------------------------- heap
    def _push(self, key: str, *, after: float) -> None:
        known = self._known[key]
        upcoming = known.plan.next_transition(after)
        if upcoming is None:
            return
        heapq.heappush(
            self._heap,
            _Entry(at=upcoming.at, key=key, version=known.version, schedule=upcoming.entry.label),
        )
        self.stats.heap_pushes += 1
        if len(self._heap) > 2 * len(self._known) + 64:
            self._heap = [e for e in self._heap if self._live(e)]
            heapq.heapify(self._heap)

    def _live(self, entry: _Entry) -> bool:
        known = self._known.get(entry.key)
        return known is not None and known.version == entry.version

    def next_due(self) -> float | None:
        """The earliest pending transition instant, if any (stale entries included)."""
        return self._heap[0].at if self._heap else None

    def due(self, now: float) -> list[Due]:
        """Pop every transition at or before ``now`` and push each plan's next one."""
        out: list[Due] = []
        while self._heap and self._heap[0].at <= now:
            entry = heapq.heappop(self._heap)
            if not self._live(entry):
                continue
            known = self._known[entry.key]
            out.append(
                Due(
                    key=entry.key, generation=known.generation, at=entry.at, schedule=entry.schedule
                )
            )
            self._push(entry.key, after=entry.at)
        self.stats.due += len(out)
        return out

    # -------------------------------------------------------------------------- resync
    def resync(
        self, *, etags: Mapping[str, str], statuses: Mapping[str, AgentStatus], now: float
    ) -> list[Due]:
        """Bring the plans in line with the listed manifests; return the transitions already due
        whose effect the statuses do not show (a new leader's catch-up)."""
        for key in [k for k in self._known if k not in etags]:
            self.forget(key)
        for key, etag in etags.items():
            known = self._known.get(key)
            if known is not None and known.etag == etag:
                continue
            status = statuses.get(key)
            if known is not None or status is None or _may_be_scheduled(status, etag):
                self.refresh(key, etag=etag)
        out: list[Due] = []
        for key, known in self._known.items():
            status = statuses.get(key)
            if status is None or status.phase not in ("Running", "Suspended", "Failed"):
                continue  # in progress (resync enqueues it anyway), deleting, or not yet seen
            level = self._level(key, known, now)
            if level.since is None or (level.replicas == 0) == (status.phase == "Suspended"):
                continue
            out.append(
                Due(
                    key=key,
                    generation=known.generation,
                    at=level.since.at,
                    schedule=level.since.entry.label,
                )
            )
        self.stats.catch_up += len(out)
        return out

    @property
    def tracked(self) -> int:
        """Agents with a plan."""
        return len(self._known)


def _may_be_scheduled(status: AgentStatus, etag: str) -> bool:
    scheduled = status.condition("Scheduled")
    return (
        (scheduled is not None and scheduled.status == "True")
        or status.phase == "Suspended"
        or status.manifest_etag != etag
    )
