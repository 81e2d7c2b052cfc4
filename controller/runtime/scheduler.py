"""The scheduler: leader-only work that turns desired-state changes and drift into work units.

Design
------
- Runs only while this replica leads, started by the elector's ``on_started_leading(epoch,
  stop)`` and ended through ``stop``. Every enqueue carries the leader's fence (a
  ``ConditionCheck`` on the lease item in the same transaction), so a deposed leader cannot
  enqueue: the first rejected enqueue ends the scheduler at once.
- Fast path: ``oabctl`` writes a change record to DynamoDB after each accepted S3 write; the
  scheduler polls those through the state store's change log (a few shard queries every
  ``change_poll_s``) and enqueues each change, so a reconcile starts within about
  ``change_poll_s`` + the worker's idle poll of ``apply``.
- Slow path: a full resync every ``resync_period_s`` (jittered +-10 %) and once on every
  takeover. It lists the manifests' ETags (one ListObjectsV2 per 1,000 agents), scans the status
  items (:meth:`~oab.controller.adapters.statestore.StateStore.statuses`), describes the ECS
  services in batches of 10 and the auto-restart secrets' versions, and enqueues only what
  differs: a manifest whose ETag is not the one last reconciled, a status
  without a manifest, a Running agent whose service is missing or drifted, a new secret version
  or a new version of an ``oab.dev/v2`` ``configFrom: s3://`` object (both ``watched_secrets``).
  A no-op resync therefore costs about 0.1 AWS request per agent (DescribeServices) and reads
  no manifest.
- Idempotency tokens are deterministic: (key, generation, S3 version id, "apply"|"delete") for
  changes, so the same change record read twice (or by two successive leaders) enqueues once;
  (key, generation, ETag, "resync:<round>") for resync findings, so drift is re-enqueued once
  per round at most.
- Every visibility timeout it also gives back claims that have stayed unchanged for a whole
  visibility timeout on the leader's own clock (``WorkQueue.expire_stale_claims``, fenced): a
  dead worker whose wall clock ran ahead stored deadlines in everyone else's future.
- Each enqueue stores its :class:`~oab.controller.core.outcome.Origin` (the cause, its detail,
  the epoch, the trace context of the change from ``oabctl apply``) in the row's ``reason`` and
  context map, so the worker's reconcile span links to the apply and the audit row names the
  epoch.
- Bad data never stops the loop (skip and report): a change record that does not decode is
  skipped and counted (the resync finds the change it may have announced); a status item that
  does not decode is left out of the resync's comparisons and its unit is parked (fenced) with
  ``CorruptStatus: ...``, which ``oabctl get/describe/queue`` show; a manifest key that is not
  ``manifests/{ns}/{name}.yaml`` of DNS labels is skipped; an unreadable queue row is
  quarantined by the queue itself (enqueue, sweep). Each is counted in ``oab.poison.items``
  (``oab.table``, ``oab.kind``) and logged. An enqueue refused for one key (a row that cannot be
  repaired, a request DynamoDB refuses) is skipped; the others go on. Anything else that fails
  an iteration is counted (``oab.loop.errors{oab.loop=scheduler}``) and retried with backoff.

Time model: loop timing uses the injected monotonic clock and ``Event.wait``; change cursors use
wall-clock milliseconds stamped by the writers (with a look-back window that tolerates skew
between hosts of up to ``ChangeLog``'s look-back).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from oab.controller.adapters.changes import Cursor
from oab.controller.adapters.configsource import CONFIG_VERSION_KEY
from oab.controller.adapters.ecs import EcsAdapter
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.statestore import StateStore
from oab.controller.adapters.store import DesiredStateStore
from oab.controller.base.names import MANIFEST_PREFIX, agent_key_of, ecs_name, is_agent_key
from oab.controller.core.outcome import Cause, Origin
from oab.controller.core.status import AgentStatus
from oab.controller.core.stored import UnreadableItem, clip
from oab.controller.observability.telemetry import instruments
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.runtime.schedules import ScheduleTracker
from oab.leader.errors import FencedOut
from oab.leader.fence import Fence
from oab.queue.errors import ExtraConditionFailed, QueueError
from oab.queue.workqueue import WorkQueue, idempotency_token

log = logging.getLogger("oab.controller.runtime.scheduler")
tracer = trace.get_tracer("oab.controller.runtime.scheduler")


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """Scheduler timing.

    - ``change_poll_s`` (default 0.5): how often change records are read. Lower starts
      reconciles sooner after ``apply``; each poll costs one Query per change shard.
    - ``resync_period_s`` (default 300): full resync period (jittered +-10 %). Lower catches
      drift and lost change records sooner; each resync costs ~0.1 AWS request per agent.
    - ``takeover_lookback_s`` (default 600): on takeover, change records this old are read
      again (enqueue is idempotent, so re-reading is harmless).
    """

    change_poll_s: float = 0.5
    resync_period_s: float = 300.0
    takeover_lookback_s: float = 600.0

    def __post_init__(self) -> None:
        if self.change_poll_s <= 0 or self.resync_period_s <= 0 or self.takeover_lookback_s < 0:
            raise ValueError("scheduler periods must be > 0")


@dataclass
class ResyncReport:
    """What one resync saw and did (also returned to tests and the bench)."""

    agents: int = 0
    enqueued: dict[str, str] = field(default_factory=dict)
    aws_requests: int = 0
    #: Units parked because their status item does not decode: key -> the problem.
    parked: dict[str, str] = field(default_factory=dict)
    #: Object keys under ``manifests/`` that do not name an agent.
    skipped_keys: list[str] = field(default_factory=list)


class Scheduler:
    """Leader-only producer of work units (see the module docstring)."""

    def __init__(
        self,
        *,
        queue: WorkQueue,
        state: StateStore,
        s3: Any,
        bucket: str,
        ecs: EcsAdapter,
        secrets: SecretVersions,
        config: SchedulerConfig | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        schedules: ScheduleTracker | None = None,
    ) -> None:
        self._queue = queue
        self._state = state
        self._changes = state.changes
        self._s3 = s3
        self._bucket = bucket
        self._ecs = ecs
        self._secrets = secrets
        self.config = config or SchedulerConfig()
        self._monotonic = monotonic
        self._wall = wall
        self._rng = rng or random.Random()
        self._round = 0
        #: spec.schedules' next transitions (runtime/schedules.py); reads the manifests itself.
        self.schedules = schedules or ScheduleTracker(
            manifests=StoreManifests(DesiredStateStore(S3ObjectStore(s3, bucket))), wall=wall
        )

    # ------------------------------------------------------------------ loop
    def run(self, fence: Fence, stop: threading.Event) -> Literal["stopped", "fenced"]:
        """Schedule until ``stop`` is set (``"stopped"``) or the fence is rejected (``"fenced"``:
        a newer leader exists). Nothing else ends it; an exception escaping it is a bug."""
        cursor = Cursor.starting_at(
            int((self._wall() - self.config.takeover_lookback_s) * 1000),
            shards=self._changes.shards,
        )
        next_resync = self._monotonic()  # resync at once on takeover
        reap_every = self._queue.config.visibility_timeout
        next_reap = self._monotonic() + reap_every
        failures = 0
        try:
            while not stop.is_set():
                delay = self.config.change_poll_s
                try:
                    # A failed poll keeps the old cursor: the same changes are read (and
                    # enqueued, idempotently) again next time.
                    cursor = self.poll_changes(fence, cursor)
                    self.fire_schedules(fence)
                    if self._monotonic() >= next_reap and not stop.is_set():
                        # Claims of dead workers whose wall clocks ran ahead: see the queue.
                        next_reap = self._monotonic() + reap_every
                        try:
                            reaped = self._queue.expire_stale_claims(
                                extra_condition=fence.condition_check()
                            )
                        except ExtraConditionFailed as exc:
                            raise _fenced_out(fence) from exc
                        if reaped:
                            log.warning("gave back stale claims", extra={"keys": len(reaped)})
                    if self._monotonic() >= next_resync and not stop.is_set():
                        self.resync(fence)
                        period = self.config.resync_period_s
                        next_resync = self._monotonic() + period * self._rng.uniform(0.9, 1.1)
                    failures = 0
                except FencedOut:
                    raise
                except Exception:
                    # Leader-only work must outlive AWS hiccups: leaving this loop would keep the
                    # lease with nobody scheduling. Back off (capped) and try again.
                    instruments.loop_errors.add(1, {"oab.loop": "scheduler"})
                    failures += 1
                    delay = min(30.0, self.config.change_poll_s * 2**failures)
                    log.warning(
                        "scheduler iteration failed; retrying in %.1f s",
                        delay,
                        exc_info=True,
                        extra=fence_extra(fence),
                    )
                    if self._monotonic() >= next_resync:
                        # A failed resync is retried soon, not after a whole period.
                        next_resync = self._monotonic() + min(self.config.resync_period_s, 30.0)
                stop.wait(delay)
        except FencedOut:
            log.warning(
                "fenced out: a newer leader exists; scheduler stops", extra=fence_extra(fence)
            )
            return "fenced"
        return "stopped"

    def poll_changes(self, fence: Fence, cursor: Cursor) -> Cursor:
        """Enqueue every change recorded after ``cursor``; returns the next cursor.

        Unreadable records are skipped and reported; a key whose enqueue is refused for good is
        skipped (the others go on); a retryable failure ends the poll, and the same changes
        are read again next time (enqueue is idempotent).
        """
        found, nxt = self._changes.read_since(cursor)  # unreadable records: reported by the log
        for change in found:
            key = agent_key_of(change.key)
            if key is None:
                continue  # a fleet object: its children have change records of their own
            token = idempotency_token(key, change.generation, change.version_id, change.kind)
            self._enqueue_or_skip(
                fence,
                key=key,
                generation=change.generation,
                origin=Origin(cause=Cause(change.kind)),
                token=token,
                carrier=change.trace_context,
            )
            self.schedules.refresh(key)  # a new generation: re-plan its schedules at once
        return nxt

    def fire_schedules(self, fence: Fence) -> int:
        """Enqueue every schedule transition now due (fenced; runtime/schedules.py)."""
        due = self.schedules.due(self._wall())
        for item in due:
            self._enqueue_or_skip(
                fence,
                key=item.key,
                generation=item.generation,
                origin=item.origin,
                token=item.token,
                carrier={},
            )
        return len(due)

    def _enqueue_or_skip(
        self,
        fence: Fence,
        *,
        key: str,
        generation: int,
        origin: Origin,
        token: str,
        carrier: Mapping[str, str],
    ) -> str | None:
        """:meth:`_enqueue`, skipping (logged) a key whose enqueue can never succeed."""
        try:
            return self._enqueue(
                fence, key=key, generation=generation, origin=origin, token=token, carrier=carrier
            )
        except QueueError as exc:
            if exc.retryable:
                raise
            log.warning("enqueue of %s refused; skipped: %s", key, exc, extra=fence_extra(fence))
            return None

    # --------------------------------------------------------------- enqueue
    def _enqueue(
        self,
        fence: Fence,
        *,
        key: str,
        generation: int,
        origin: Origin,
        token: str,
        carrier: Mapping[str, str],
    ) -> str:
        """Enqueue one unit, fenced; ``origin`` (without epoch and trace) is why, ``carrier`` the
        trace headers of the change, if any. The row stores ``origin``'s encoding with this
        leader's epoch and the enqueue span's trace headers."""
        # A change carries the apply's context; a resync finding has none and becomes a child of
        # the resync span (the current context), so every enqueue sits in a meaningful trace.
        parent = propagate.extract(dict(carrier)) if "traceparent" in carrier else None
        with tracer.start_as_current_span(
            "enqueue",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "oab.agent.key": key,
                "oab.generation": generation,
                "oab.epoch": fence.epoch,
                "oab.idempotency_token": token,
                "oab.reason": origin.reason(),
                "messaging.system": "aws_dynamodb",
                "messaging.operation.type": "send",
                "messaging.destination.name": "oab-queue",
            },
        ) as span:
            out: dict[str, str] = {}
            propagate.inject(out)
            stored = replace(origin, epoch=fence.epoch, trace=out)
            try:
                result = self._queue.enqueue(
                    key,
                    generation,
                    stored.reason(),
                    token,
                    extra_condition=fence.condition_check(),
                    trace_context=stored.context(),
                )
            except ExtraConditionFailed as exc:
                span.record_exception(exc)
                instruments.fenced_writes_rejected.add(1, {"oab.operation": "enqueue"})
                raise _fenced_out(fence) from exc
            span.set_attribute("oab.enqueue.outcome", str(result.outcome))
            return str(result.outcome)

    # ---------------------------------------------------------------- resync
    def resync(self, fence: Fence) -> ResyncReport:
        """Compare desired state, status and ECS; enqueue what differs."""
        self._round += 1
        report = ResyncReport()
        with tracer.start_as_current_span(
            "scheduler.resync", attributes={"oab.epoch": fence.epoch, "oab.round": self._round}
        ) as span:
            etags = self._manifest_etags(report)
            unreadable: dict[str, UnreadableItem] = {}
            statuses = self._statuses(report, unreadable)
            for key, problem in sorted(unreadable.items()):
                self._park_unreadable(fence, key, problem, report)
            # Plans once per manifest generation; transitions already due enqueued at once.
            for item in self.schedules.resync(etags=etags, statuses=statuses, now=self._wall()):
                if self._enqueue_or_skip(
                    fence,
                    key=item.key,
                    generation=item.generation,
                    origin=item.origin,
                    token=item.token,
                    carrier={},
                ):
                    report.enqueued[item.key] = item.origin.reason()
            keys = sorted(
                (set(etags) | {k for k, s in statuses.items() if s.phase is not None})
                - set(unreadable)
            )
            report.agents = len(keys)
            live = [
                k
                for k in keys
                if k in statuses and statuses[k].phase in ("Running", "Suspended", "Failed")
            ]
            names = {k: ecs_name(*k.split("/", 1)) for k in live}
            described = self._ecs.describe_services(list(names.values())) if names else {}
            report.aws_requests += (len(names) + 9) // 10
            watched = self._watched_versions(statuses, report)
            for key in keys:
                status = statuses.get(key, AgentStatus(key=key))
                reason = self._drift(
                    key,
                    etag=etags.get(key),
                    status=status,
                    service=described.get(names.get(key, ""), None) if key in names else None,
                    checked=key in names,
                    versions=watched.get(key, {}),
                )
                if reason is None:
                    continue
                generation = status.observed_generation
                token = idempotency_token(
                    key, generation, etags.get(key, ""), f"resync:{self._round}"
                )
                done = self._enqueue_or_skip(
                    fence,
                    key=key,
                    generation=generation,
                    origin=Origin(cause=Cause.RESYNC, detail=reason),
                    token=token,
                    carrier={},
                )
                if done is not None:
                    report.enqueued[key] = reason
            span.set_attribute("oab.resync.agents", report.agents)
            span.set_attribute("oab.resync.enqueued", len(report.enqueued))
            _census(statuses)
            try:
                self._queue.depth_by_state()  # refreshes the queue depth gauges (one scan)
            except Exception:  # a gauge refresh must not end the leader's scheduler
                log.warning("queue depth snapshot failed", exc_info=True)
        return report

    @staticmethod
    def _drift(
        key: str,
        *,
        etag: str | None,
        status: AgentStatus,
        service: Mapping[str, Any] | None,
        checked: bool,
        versions: Mapping[str, str],
    ) -> str | None:
        """Why ``key`` needs a reconcile, or ``None`` (pure)."""
        if etag is None:
            return "manifest-removed" if status.phase is not None else None
        if status.phase is None:
            return "new"
        if etag != status.manifest_etag:
            return "manifest-changed"
        if status.phase in ("Pending", "Terminating"):
            return "in-progress"
        changed = {n for n, v in versions.items() if v and status.secret_versions.get(n, "") != v}
        if changed:
            return "config-changed" if changed == {CONFIG_VERSION_KEY} else "secret-rotated"
        if not checked:
            return None
        if service is None:
            return "service-missing"
        if status.phase == "Running":
            if service.get("taskDefinition") != status.task_definition_arn:
                return "task-definition-drift"
            if int(service.get("desiredCount", 0)) != 1:
                return "desired-count-drift"
            if int(service.get("runningCount", 0)) < 1:
                return "not-running"
        if status.phase == "Suspended" and int(service.get("desiredCount", 0)) != 0:
            return "desired-count-drift"
        return None

    def _manifest_etags(self, report: ResyncReport) -> dict[str, str]:
        out: dict[str, str] = {}
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=MANIFEST_PREFIX):
            report.aws_requests += 1
            for obj in page.get("Contents", []):
                name = str(obj.get("Key", ""))
                key = agent_key_of(name)
                if key is None:
                    # Not an agent's manifest (written straight to the bucket): no unit to
                    # reconcile, and a name like a/b/c would break the ECS calls of the rest.
                    instruments.poison_items.add(1, {"oab.table": "bucket", "oab.kind": "key"})
                    report.skipped_keys.append(clip(name, 256))
                    continue
                out[key] = str(obj.get("ETag", ""))
        if report.skipped_keys:
            log.warning(
                "skipped %d object(s) under %s that are not agent manifests: %s",
                len(report.skipped_keys),
                MANIFEST_PREFIX,
                ", ".join(report.skipped_keys[:5]),
            )
        return out

    def _statuses(
        self, report: ResyncReport, unreadable: dict[str, UnreadableItem]
    ) -> dict[str, AgentStatus]:
        def count() -> None:
            report.aws_requests += 1

        def skip(key: str, exc: UnreadableItem) -> None:
            unreadable[key] = exc

        return self._state.statuses(on_page=count, on_unreadable=skip)

    def _park_unreadable(
        self, fence: Fence, key: str, problem: UnreadableItem, report: ResyncReport
    ) -> None:
        """Park the unit of an unreadable status item with the reason (fenced)."""
        instruments.poison_items.add(1, {"oab.table": "state", "oab.kind": "status"})
        log.warning(
            "unreadable status item, parking %s: %s", key, problem, extra=fence_extra(fence)
        )
        report.parked[key] = str(problem)
        error = (
            f"CorruptStatus: {problem}; repair or delete the item, then `oabctl queue retry {key}`"
        )
        if not is_agent_key(key):
            return  # not an agent's key: no unit to park (reported above)
        try:
            self._queue.park(key, error, extra_condition=fence.condition_check())
        except ExtraConditionFailed as exc:
            instruments.fenced_writes_rejected.add(1, {"oab.operation": "park"})
            raise _fenced_out(fence) from exc
        except QueueError as exc:
            if exc.retryable:
                raise
            log.warning("parking %s refused: %s", key, exc, extra=fence_extra(fence))

    def _watched_versions(
        self, statuses: Mapping[str, AgentStatus], report: ResyncReport
    ) -> dict[str, dict[str, str]]:
        """Current versions of every auto-restart secret, per agent (batched reads)."""
        refs: list[tuple[str, str, tuple[str, str]]] = []
        for key, status in statuses.items():
            for name, watched in status.watched_secrets.items():
                source, _, where = watched.partition(":")
                refs.append((key, name, (source, where)))
        if not refs:
            return {}
        versions = self._secrets.batch(pair for _k, _n, pair in refs)
        report.aws_requests += 1
        out: dict[str, dict[str, str]] = {}
        for key, name, pair in refs:
            out.setdefault(key, {})[name] = versions.get(pair, "")
        return out


def _census(statuses: Mapping[str, AgentStatus]) -> None:
    """Agents by phase and SecretInjectionFailed count, for the ``oab.agents*`` gauges."""
    phases: dict[str, int] = dict.fromkeys(
        ("Pending", "Running", "Suspended", "Failed", "Terminating"), 0
    )
    failed_injection = 0
    for status in statuses.values():
        if status.phase is None:
            continue
        phases[status.phase] = phases.get(status.phase, 0) + 1
        cond = status.condition("SecretInjectionFailed")
        failed_injection += int(cond is not None and cond.status == "True")
    instruments.record_agents(phases, secret_injection_failed=failed_injection)


def _fenced_out(fence: Fence) -> FencedOut:
    """The leader's :class:`~oab.leader.errors.FencedOut` for a write whose fence failed (the
    queue reports it as :class:`~oab.queue.errors.ExtraConditionFailed`)."""
    return FencedOut(lease=fence.lease_name, holder=fence.holder, epoch=fence.epoch)


def fence_extra(fence: Fence) -> dict[str, object]:
    """Structured-log fields naming the fence."""
    return {"holder": fence.holder, "epoch": fence.epoch}
