"""One controller replica: the composition root that builds every client once and wires them.

Design
------
- Wiring only: the constructor builds objects and makes no AWS request. Every AWS client
  (:class:`Clients`, including STS and the lease's) comes from the one factory
  (:mod:`oab.controller.adapters.aws`) on one session that honours the profile. The lease's
  DynamoDB client has short timeouts and no botocore retries (the elector owns its retry
  budget); everything else uses botocore's standard mode with a small attempt budget (the only
  retry layer below the queue's persisted backoff). The one read the wiring needs (the render
  context: the cluster profile in S3, the account from STS) happens when the reconciler is first
  used, which :meth:`Replica.start` does first.
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
from oab.controller.adapters.configsource import ConfigObjects
from oab.controller.adapters.ecs import EcsAdapter
from oab.controller.adapters.ingress import AwsIngress, AwsSecretValues
from oab.controller.adapters.models import bind_models
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.ratelimit import DEFAULT_BUCKETS, BucketConfig, RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.statestore import DynamoStateStore
from oab.controller.adapters.store import DesiredStateStore
from oab.controller.base.clock import Clock
from oab.controller.core import render
from oab.controller.core.clusterprofile import render_context
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.reconcile.ingress import IngressConfig, IngressReconciler
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


@dataclass(frozen=True, kw_only=True)
class Clients:
    """Every AWS client a replica uses, each from the one factory
    (:func:`~oab.controller.adapters.aws.make_client`) on one session that honours the
    settings' profile, region and endpoint. Building them makes no request."""

    dynamodb: Any
    s3: Any
    ecs: Any
    ssm: Any
    secretsmanager: Any
    sts: Any
    #: Webhook ingress (API Gateway HTTP APIs, Cloud Map, EC2 security groups and VPCs).
    apigateway: Any
    servicediscovery: Any
    ec2: Any
    #: The lease's own DynamoDB client: short timeouts, no botocore retries (the elector owns
    #: its retry budget: :meth:`~oab.leader.config.ElectionConfig.botocore_config`).
    lease: Any

    @classmethod
    def build(cls, settings: DaemonSettings, *, election: ElectionConfig) -> Clients:
        """The clients of ``settings`` (``aws_profile``, ``region``, ``endpoint``)."""
        s = settings
        session = make_session(region=s.region, profile=s.aws_profile, principal="oab-controller")
        opts = ClientOptions()

        def client(service: str) -> Any:
            return make_client(session, service, endpoint_url=s.endpoint, options=opts)

        return cls(
            dynamodb=client("dynamodb"),
            s3=client("s3"),
            ecs=client("ecs"),
            ssm=client("ssm"),
            secretsmanager=client("secretsmanager"),
            sts=client("sts"),
            apigateway=client("apigatewayv2"),
            servicediscovery=client("servicediscovery"),
            ec2=client("ec2"),
            lease=make_client(
                session, "dynamodb", endpoint_url=s.endpoint, config=election.botocore_config()
            ),
        )


def election_config(settings: DaemonSettings) -> ElectionConfig:
    """The elector's configuration from the daemon's settings."""
    s = settings
    return ElectionConfig(
        identity=ReplicaId(s.replica_id),
        lease_name=s.lease_name,
        lease_duration=s.lease_duration_s,
        renew_deadline=s.renew_deadline_s,
        retry_period=s.retry_period_s,
        call_timeout=min(1.0, s.renew_deadline_s / 2),
    )


def rate_buckets(settings: DaemonSettings) -> dict[str, BucketConfig]:
    """The AWS rate limiter's buckets: the defaults with the settings' ECS rates."""
    s = settings
    buckets = dict(DEFAULT_BUCKETS)
    buckets["ecs.read"] = BucketConfig(rate=s.ecs_read_rate, burst=int(s.ecs_read_rate * 2) + 1)
    buckets["ecs.mutate"] = BucketConfig(
        rate=s.ecs_mutate_rate, burst=int(s.ecs_mutate_rate * 2) + 1
    )
    buckets["ecs.register"] = BucketConfig(
        rate=s.ecs_register_rate, burst=int(s.ecs_register_rate * 5) + 1
    )
    return buckets


def resolve_render_context(settings: DaemonSettings, *, s3: Any, sts: Any) -> render.RenderContext:
    """The renderer's context: the settings, the cluster profile ``oabctl init`` stored, and the
    account (from the settings or the profile, else asked of STS: role ARNs need it).

    I/O (one S3 read, at most one STS call): called when the reconciler is first needed, never
    while the replica is being wired.
    """
    s = settings
    profile = read_cluster_profile(s3, s.bucket)
    account = s.account or (profile.account if profile else None)
    if account is None:
        account = str(sts.get_caller_identity()["Account"])
    return render_context(s, profile, account=account)


class Replica:
    """Builds and runs one replica (see the module docstring)."""

    def __init__(
        self,
        settings: DaemonSettings,
        *,
        clients: Clients | None = None,
        clock: Clock | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        on_loop_died: Callable[[str], None] | None = None,
    ) -> None:
        """Wire the replica's parts; no AWS request is made until :meth:`start` (or the first
        use of :attr:`reconciler`)."""
        self.settings = settings
        self._on_loop_died = on_loop_died or (lambda _name: None)
        self._dead: list[str] = []
        self._dead_lock = threading.Lock()
        self.clock: Clock = clock or SkewedClock(
            offset=settings.chaos_clock_offset_s, rate=settings.chaos_clock_rate
        )
        self._on_event = on_event or (lambda _kind, _data: None)
        s = settings
        election = election_config(s)
        self.clients = clients or Clients.build(s, election=election)
        self.dynamodb = self.clients.dynamodb
        self.s3 = self.clients.s3
        self.ecs_client = self.clients.ecs
        tables = s.tables
        self.tables = tables
        self._limiter = RateLimiter(rate_buckets(s), monotonic=self.clock.monotonic)
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
        #: The one store of status, run log and change records (worker, scheduler).
        self.state = DynamoStateStore(
            bind_models(self.dynamodb, tables),
            changes=changes,
        )
        self._store = DesiredStateStore(S3ObjectStore(self.s3, s.bucket), changes=changes)
        self.ecs = EcsAdapter(self.ecs_client, cluster=s.cluster, limiter=self._limiter)
        self._secrets = SecretVersions(
            ssm=self.clients.ssm,
            secretsmanager=self.clients.secretsmanager,
            s3=self.s3,
            limiter=self._limiter,
        )
        self._configs = ConfigObjects(self.s3, control_plane_bucket=s.bucket, limiter=self._limiter)
        self.scheduler = Scheduler(
            queue=self.queue,
            state=self.state,
            s3=self.s3,
            bucket=s.bucket,
            ecs=self.ecs,
            secrets=self._secrets,
            config=SchedulerConfig(
                change_poll_s=s.change_poll_s, resync_period_s=s.resync_period_s
            ),
            monotonic=self.clock.monotonic,
            wall=self.clock.time,
        )
        self.elector = LeaderElector(
            election,
            DynamoLeaseStore(self.clients.lease, tables.lease, s.lease_name),
            on_started_leading=self._lead,
            on_stopped_leading=self._stopped,
            on_new_leader=self._new_leader,
            clock=self.clock,
        )
        self._stop_workers = threading.Event()
        self._threads: list[threading.Thread] = []

    @functools.cached_property
    def reconciler(self) -> Reconciler:
        """The reconciler, built on first use: its render context is read from S3 (and STS)."""
        s = self.settings
        return Reconciler(
            manifests=StoreManifests(self._store, configs=self._configs),
            ecs=self.ecs,
            s3=self.s3,
            bucket=s.bucket,
            secrets=self._secrets,
            context=resolve_render_context(s, s3=self.s3, sts=self.clients.sts),
            wall=self.clock.time,
            config=ReconcileConfig(progress_poll_s=s.progress_poll_s),
            limiter=self._limiter,
            ingress=IngressReconciler(
                api=AwsIngress(
                    apigateway=self.clients.apigateway,
                    servicediscovery=self.clients.servicediscovery,
                    ec2=self.clients.ec2,
                    limiter=self._limiter,
                ),
                ecs=self.ecs,
                secret_value=AwsSecretValues(
                    ssm=self.clients.ssm,
                    secretsmanager=self.clients.secretsmanager,
                    limiter=self._limiter,
                ),
                config=IngressConfig(telegram_api_url=s.telegram_api_url),
            ),
        )

    @functools.cached_property
    def worker(self) -> Worker:
        """The worker pool's loop (built with the reconciler, on first use)."""
        s = self.settings
        return Worker(
            queue=self.queue,
            reconciler=self.reconciler,
            state=self.state,
            replica_id=s.replica_id,
            config=WorkerConfig(workers=s.workers, idle_poll_s=s.idle_poll_s),
            monotonic=self.clock.monotonic,
            wall=self.clock.time,
        )

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
        """Start the elector and the worker pool (returns once the render context is read)."""
        worker = self.worker  # the first AWS requests: fail here, before leading or claiming
        self.elector.start()
        for i in range(self.settings.workers):
            name = f"w{i}"
            run = functools.partial(worker.run, self._stop_workers)
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
