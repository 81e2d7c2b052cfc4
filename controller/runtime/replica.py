"""One controller replica: the composition root that builds every client once and wires them.

Design
------
- AWS clients are built here and nowhere else, from :class:`DaemonSettings`. The lease gets its
  own DynamoDB client with short timeouts and no botocore retries (the elector owns its retry
  budget); everything else uses botocore's standard mode with a small attempt budget (the only
  retry layer below the queue's persisted backoff).
- Every replica runs the worker pool; only the leader runs the scheduler, started by the elector
  with the term's stop event and the term's fence.
- Shutdown (SIGTERM): stop claiming; let in-flight work finish within the budget and release
  what does not (its claim is given back, so another replica picks it up at once instead of
  after the visibility timeout); then hand the lease over (leader work drained first, lease
  released with the epoch kept) so a standby leads within about one retry period; exit 0.
- Supervision: the worker loops and the scheduler contain every per-unit failure themselves, so
  a loop that ends while the replica is not shutting down is a bug. It is recorded at once
  (:meth:`Replica.dead_loops`, :meth:`Replica.alive` turns false) and reported through
  ``on_loop_died``; the daemon then stops reporting health and exits non-zero, so ECS replaces
  the task instead of leaving a replica that holds the lease (or claims) with a loop missing.

Time model: the clocks are injected (``monotonic``, ``wall``) so that the chaos suite can skew
them per replica (``chaos_clock_*``); production uses ``time.monotonic`` and ``time.time``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oab.controller.adapters.aws import ClientOptions, make_client, make_session
from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.clusterprofile import read_cluster_profile
from oab.controller.adapters.ecs import EcsAdapter
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.ratelimit import DEFAULT_BUCKETS, BucketConfig, RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.store import DesiredStateStore
from oab.controller.base.clock import Clock
from oab.controller.core import render
from oab.controller.core.clusterprofile import render_context
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.reconcile.reconciler import ReconcileConfig, Reconciler
from oab.controller.runtime.scheduler import Scheduler, SchedulerConfig
from oab.controller.runtime.settings import DaemonSettings
from oab.controller.runtime.worker import Worker, WorkerConfig
from oab.leader.config import ElectionConfig
from oab.leader.elector import LeaderElector
from oab.leader.lease import DynamoLeaseStore
from oab.leader.record import Epoch, ReplicaId
from oab.queue.config import QueueConfig
from oab.queue.workqueue import WorkQueue

log = logging.getLogger("oab.controller.runtime.replica")


@dataclass(frozen=True)
class SkewedClock:
    """The controller's :class:`~oab.controller.base.clock.Clock` with a chaos offset and rate
    (identity in production)."""

    offset: float = 0.0
    rate: float = 1.0
    _mono0: float = time.monotonic()

    def monotonic(self) -> float:
        """Local monotonic seconds, scaled by ``rate``."""
        now = time.monotonic()
        return self._mono0 + (now - self._mono0) * self.rate

    def time(self) -> float:
        """Wall-clock seconds plus ``offset``."""
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` as this clock counts them (real seconds divided by ``rate``)."""
        time.sleep(max(0.0, seconds) / self.rate)


class Replica:
    """Builds and runs one replica (see the module docstring)."""

    def __init__(
        self,
        settings: DaemonSettings,
        *,
        clock: Clock | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        on_loop_died: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_loop_died = on_loop_died or (lambda _name: None)
        self._dead: list[str] = []
        self._dead_lock = threading.Lock()
        self.clock: Clock = clock or SkewedClock(
            offset=settings.chaos_clock_offset_s, rate=settings.chaos_clock_rate
        )
        self._on_event = on_event or (lambda _kind, _data: None)
        s = settings
        session = make_session(region=s.region, profile=s.aws_profile, principal="oab-controller")
        opts = ClientOptions()
        self.dynamodb = make_client(session, "dynamodb", endpoint_url=s.endpoint, options=opts)
        self.s3 = make_client(session, "s3", endpoint_url=s.endpoint, options=opts)
        self.ecs_client = make_client(session, "ecs", endpoint_url=s.endpoint, options=opts)
        ssm = make_client(session, "ssm", endpoint_url=s.endpoint, options=opts)
        sm = make_client(session, "secretsmanager", endpoint_url=s.endpoint, options=opts)
        election = ElectionConfig(
            identity=ReplicaId(s.replica_id),
            lease_name=s.lease_name,
            lease_duration=s.lease_duration_s,
            renew_deadline=s.renew_deadline_s,
            retry_period=s.retry_period_s,
            call_timeout=min(1.0, s.renew_deadline_s / 2),
        )
        lease_client = session.client(
            "dynamodb", endpoint_url=s.endpoint, config=election.botocore_config()
        )
        tables = s.tables
        self.tables = tables
        buckets = dict(DEFAULT_BUCKETS)
        buckets["ecs.read"] = BucketConfig(rate=s.ecs_read_rate, burst=int(s.ecs_read_rate * 2) + 1)
        buckets["ecs.mutate"] = BucketConfig(
            rate=s.ecs_mutate_rate, burst=int(s.ecs_mutate_rate * 2) + 1
        )
        buckets["ecs.register"] = BucketConfig(
            rate=s.ecs_register_rate, burst=int(s.ecs_register_rate * 5) + 1
        )
        limiter = RateLimiter(buckets, monotonic=self.clock.monotonic)
        self.queue = WorkQueue(
            self.dynamodb,
            tables.queue,
            config=QueueConfig(
                shards=s.queue_shards,
                visibility_timeout=s.claim_visibility_s,
                backoff_base=s.backoff_base_s,
                backoff_cap=s.backoff_cap_s,
                clock_skew_allowance=s.clock_skew_allowance_s,
            ),
            clock=self.clock,
        )
        changes = ChangeLog(self.dynamodb, tables.state, wall_clock=self.clock.time)
        store = DesiredStateStore(S3ObjectStore(self.s3, s.bucket), changes=changes)
        self.ecs = EcsAdapter(self.ecs_client, cluster=s.cluster, limiter=limiter)
        secrets = SecretVersions(ssm=ssm, secretsmanager=sm, limiter=limiter)
        self.reconciler = Reconciler(
            manifests=StoreManifests(store),
            ecs=self.ecs,
            s3=self.s3,
            bucket=s.bucket,
            secrets=secrets,
            context=self._render_context(),
            wall=self.clock.time,
            config=ReconcileConfig(progress_poll_s=s.progress_poll_s),
            limiter=limiter,
        )
        self.worker = Worker(
            queue=self.queue,
            reconciler=self.reconciler,
            dynamodb=self.dynamodb,
            tables=tables,
            replica_id=s.replica_id,
            config=WorkerConfig(workers=s.workers, idle_poll_s=s.idle_poll_s),
            monotonic=self.clock.monotonic,
            wall=self.clock.time,
        )
        self.scheduler = Scheduler(
            queue=self.queue,
            changes=changes,
            s3=self.s3,
            bucket=s.bucket,
            dynamodb=self.dynamodb,
            state_table=tables.state,
            ecs=self.ecs,
            secrets=secrets,
            config=SchedulerConfig(
                change_poll_s=s.change_poll_s, resync_period_s=s.resync_period_s
            ),
            monotonic=self.clock.monotonic,
            wall=self.clock.time,
        )
        self.elector = LeaderElector(
            election,
            DynamoLeaseStore(lease_client, tables.lease, s.lease_name),
            on_started_leading=self._lead,
            on_stopped_leading=self._stopped,
            on_new_leader=self._new_leader,
            clock=self.clock,
        )
        self._stop_workers = threading.Event()
        self._threads: list[threading.Thread] = []

    def _render_context(self) -> render.RenderContext:
        s = self.settings
        profile = read_cluster_profile(self.s3, s.bucket)
        account = s.account or (profile.account if profile else None)
        if account is None:
            # Role ARNs need the account: ask STS (the emulator answers with its fixed one).
            session = make_session(region=s.region, principal="oab-controller")
            sts = make_client(session, "sts", endpoint_url=s.endpoint)
            account = str(sts.get_caller_identity()["Account"])
        return render_context(s, profile, account=account)

    # -------------------------------------------------------------- callbacks
    def _lead(self, epoch: Epoch, stop: threading.Event) -> None:
        log.info("started leading", extra={"replica": self.settings.replica_id, "epoch": epoch})
        self._on_event("leading", {"epoch": int(epoch)})
        try:
            fence = self.elector.fence()
        except Exception:
            return
        try:
            self.scheduler.run(fence, stop)
        except BaseException:
            # Still leading, nobody scheduling: the scheduler contains every expected failure,
            # so this is a bug; the replica must go (and its lease with it).
            self._loop_died("scheduler")
            raise

    def _loop_died(self, name: str) -> None:
        log.critical(
            "control loop %s ended unexpectedly", name, exc_info=True, extra={"loop": name}
        )
        with self._dead_lock:
            self._dead.append(name)
        self._on_loop_died(name)

    def _supervised(self, name: str, loop: Callable[[], None]) -> Callable[[], None]:
        """``loop`` run on a thread whose end outside a shutdown is recorded (see Supervision)."""

        def run() -> None:
            try:
                loop()
            except BaseException:
                self._loop_died(name)
                raise
            if not self._stop_workers.is_set():
                self._loop_died(name)

        return run

    def _stopped(self) -> None:
        log.warning("stopped leading", extra={"replica": self.settings.replica_id})
        self._on_event("stopped", {})

    def _new_leader(self, holder: str) -> None:
        self._on_event("new_leader", {"holder": holder})

    # ---------------------------------------------------------------- running
    def start(self) -> None:
        """Start the elector and the worker pool (returns at once)."""
        self.elector.start()
        for i in range(self.settings.workers):
            name = f"w{i}"
            run = functools.partial(self.worker.run, self._stop_workers)
            t = threading.Thread(target=self._supervised(name, run), name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def dead_loops(self) -> list[str]:
        """Loops (``w0``, ``w1``, ..., ``scheduler``) that ended outside a shutdown."""
        with self._dead_lock:
            return list(self._dead)

    def alive(self) -> bool:
        """True while the elector loop and every worker thread run and no loop has died (the
        health signal)."""
        return (
            self.elector.running
            and all(t.is_alive() for t in self._threads)
            and not self.dead_loops()
        )

    def shutdown(self) -> bool:
        """Graceful stop within ``shutdown_timeout_s``; True when everything drained."""
        budget = self.settings.shutdown_timeout_s
        deadline = time.monotonic() + budget
        self._stop_workers.set()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic() - budget / 3))
        drained = not any(t.is_alive() for t in self._threads)
        if not drained:
            self.worker.release_inflight()
        released = self.elector.release(drain_timeout=max(0.5, deadline - time.monotonic()))
        log.info("shut down", extra={"drained": drained, "released": released, "budget_s": budget})
        return drained
