"""Reconcile one agent: desired manifest + stored status + ECS -> side effects + new status.

Design (controller-runtime's contract, see STYLE.md trait 5)
------------------------------------------------------------
- The request carries only the key (plus the work unit's token, for idempotent ECS calls, and the
  attempt number). Reconcile is *level based*: every run reads the manifest, the status and ECS
  afresh; nothing is remembered between runs except what is stored.
- It returns a :class:`~oab.controller.core.outcome.Result`: the status to write, ``requeue_after``
  while a deployment is still progressing, or a recorded terminal failure. Errors are raised as
  :mod:`oab.controller.base.errors` types; :func:`oab.controller.core.outcome.decide` is the one
  place that maps outcomes to queue actions. Reconcile itself never writes status: the worker
  commits the status, its audit row and the work unit's completion in one transaction.
- Side effects are idempotent across crashes and failover:
  * ``config.toml`` of a generation is written once (``If-None-Match: *``);
  * a task definition is registered only when no ACTIVE revision of the family carries the same
    content hash (tag ``oab.dev/content-hash``), so a crash between register and status write
    reuses the revision instead of registering a second one;
  * CreateService carries a ``clientToken`` derived from the work unit's idempotency token;
    UpdateService (no token in ECS) is compare-then-act against the described service;
  * a rollout that the deployment circuit breaker rolled back is not retried for the same
    content (``failed_hash``) until the generation, a restart request or a secret version changes.
- Deletion runs the finalizer steps in order, each checking the actual state first so that a crash
  at any step resumes there: scale to 0 and wait, delete the service, deregister the task
  definitions, delete the artifacts, delete the manifest, clear the status (atomically with its
  audit row). The status is cleared last so that the ``Terminating`` record survives any crash.
- Name collisions: ``oab-{ns}-{name}`` is ambiguous (``a-b``/``c`` and ``a``/``b-c``). The store
  refuses to create a rival of a stored agent; as a second line, a run never updates or deletes a
  service (or deregisters a family) whose ``oab.dev/namespace``/``oab.dev/name`` tags name another
  agent: applying parks with ``NameCollision``, deleting leaves the rival's resources alone.
- Audit completeness: a run that dies between an ECS call and its commit leaves no audit row.
  The run that next finds a service its status does not know records it as an *adopted*
  ``ecs:CreateService`` (``AwsCall.adopted``), so every service appears in the log exactly once.
- Secrets: only *versions* are read (:mod:`oab.controller.adapters.secretversions`), never values.
- Snapshots: a successful apply run of an agent with ``bootstrapFrom`` appends the agent's new
  snapshot records to its audit row and advances ``status.last_snapshot``
  (:mod:`oab.controller.adapters.snapshots` says which runs look and what it costs).

Time model: the injected wall clock stamps ``lastReconciled`` and condition transition times only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from botocore.exceptions import ClientError

from oab.controller.adapters.configsource import CONFIG_VERSION_KEY, watch_entry
from oab.controller.adapters.ecs import CallLog, EcsAdapter
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.snapshots import (
    MAX_RECORDS_PER_RUN,
    S3SnapshotRecords,
    SnapshotRecords,
    calls_for,
    wants_ingest,
)
from oab.controller.api.service import AgentKey, OABService, Phase
from oab.controller.base import names
from oab.controller.base.errors import (
    AwsError,
    ClaimInDoubt,
    OabError,
    TerminalError,
    classify_aws,
    precondition_failed,
)
from oab.controller.base.names import (
    CONTENT_HASH_TAG,
    NAME_TAG,
    NAMESPACE_TAG,
    RESTART_ANNOTATION,
)
from oab.controller.core import render
from oab.controller.core import schedule as schedules
from oab.controller.core.outcome import Cause, Request, Result, RunContext
from oab.controller.core.status import (
    AgentStatus,
    AwsCall,
    Condition,
    cleared,
    get_condition,
    iso,
    set_condition,
)
from oab.controller.observability.telemetry import step
from oab.controller.reconcile.ingress import IngressReconciler

#: Substrings of ECS stop reasons that mean a secret could not be injected.
_SECRET_FAILURE_MARKERS = (
    "unable to pull secrets",
    "unable to retrieve secret",
    "retrieve secrets",
    "secrets manager",
    "ssm parameter",
    "AccessDeniedException",
)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """The desired state of one agent as stored by ``oabctl``."""

    service: OABService
    etag: str
    deleted: bool
    #: Version of the ``configFrom: s3://`` object whose text ``service`` holds ("" without one).
    config_version: str = ""


class Manifests(Protocol):
    """Where reconcile reads desired state and, at the end of deletion, removes it."""

    def read(self, key: AgentKey) -> Manifest | None:
        """The stored manifest (``None`` when absent)."""

    def remove(self, manifest: Manifest) -> None:
        """Delete a tombstoned manifest object, only if it is still the one read.

        Raises a retryable error when it changed meanwhile (e.g. it was applied again).
        """


@dataclass(frozen=True, kw_only=True)
class ReconcileConfig:
    """Reconcile timing.

    - ``progress_poll_s`` (default 2.0): ``requeue_after`` while a deployment progresses or tasks
      drain. Lower reacts faster and costs more DescribeServices calls.
    """

    progress_poll_s: float = 2.0

    def __post_init__(self) -> None:
        if self.progress_poll_s <= 0:
            raise ValueError("progress_poll_s must be > 0")


def client_token(token: str) -> str:
    """ECS ``clientToken`` (<= 36 chars) derived from the work unit's idempotency token."""
    return "oab-" + hashlib.sha256(token.encode()).hexdigest()[:32]


def _deployments(service: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(service.get("deployments", []))


def _primary(service: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((d for d in _deployments(service) if d.get("status") == "PRIMARY"), None)


def _tagged_owner(service: Mapping[str, Any]) -> str | None:
    """``namespace/name`` from a service's identity tags, or None when it has none."""
    tags = {t.get("key"): t.get("value") for t in service.get("tags") or ()}
    namespace, name = tags.get(NAMESPACE_TAG), tags.get(NAME_TAG)
    return f"{namespace}/{name}" if namespace and name else None


def _foreign(service: Mapping[str, Any] | None, key: str) -> str | None:
    """The other agent a same-named service belongs to (see the module doc), else None."""
    owner = _tagged_owner(service) if service is not None else None
    return owner if owner is not None and owner != key else None


def _adopt(service: Mapping[str, Any] | None, status: AgentStatus, name: str, log: CallLog) -> str:
    """Record a service the status does not know as an adopted create (module doc, "Audit
    completeness"): an earlier run created it and died before its commit. Its ARN, or ""."""
    if service is None or status.service_arn:
        return ""
    arn = str(service["serviceArn"])
    log.add(AwsCall(action="ecs:CreateService", target=name, result=arn, adopted=True))
    return arn


def _refuse_rival(service: Mapping[str, Any] | None, key: str, name: str) -> None:
    """Refuse to touch a same-named service of another agent (``NameCollision``, parked)."""
    rival = _foreign(service, key)
    if rival is not None:
        raise TerminalError(
            f"ECS service {name} belongs to agent {rival} (its oab.dev tags): "
            f"{key} and {rival} map to the same ECS name; delete or rename one of them",
            reason="NameCollision",
        )


def _note_count(log: CallLog, *, name: str, before: int | None, level: schedules.Level) -> None:
    """Name in the audit row what set the desired count when it changed: a schedule or
    ``spec.suspend`` (a plain create at the spec's count needs no note)."""
    if before == level.replicas or (before is None and level.cause == "default"):
        return
    log.add(
        AwsCall(
            action="oab:DesiredCount",
            target=name,
            result=f"{before if before is not None else '-'} -> {level.replicas}: "
            f"{level.describe()}",
        )
    )


@dataclass(frozen=True, kw_only=True)
class _Versions:
    """What :meth:`Reconciler._versions` found (see there)."""

    versions: dict[str, str]
    watched: dict[str, str]
    rotated: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class _Target:
    """The service one apply run converges on: the rendered revision at the level's count."""

    svc: OABService
    name: str
    task_definition: str
    level: schedules.Level
    #: A new deployment even if nothing differs (a rotated secret or a restart annotation).
    force: bool


def _secret_failure(reason: str) -> bool:
    low = reason.lower()
    return any(m.lower() in low for m in _SECRET_FAILURE_MARKERS)


@dataclass(frozen=True, kw_only=True)
class Assessment:
    """The pure verdict on an observed service (see :func:`assess`)."""

    phase: Phase
    conditions: tuple[Condition, ...]
    requeue: bool
    failure: str = ""


def assess(
    *,
    service: Mapping[str, Any],
    task_definition: str,
    tasks: Sequence[Mapping[str, Any]],
    prior: Sequence[Condition],
    refreshed: Sequence[str],
    now: str,
) -> Assessment:
    """Phase and conditions from a described service (pure; golden tested).

    ``task_definition`` is the revision the agent should run; ``tasks`` are its described tasks
    (may be empty when not needed); ``refreshed`` names secrets whose new version this run rolled
    out.
    """
    conds = tuple(prior)
    primary = _primary(service) or {}
    running = int(service.get("runningCount", 0))
    rollout = str(primary.get("rolloutState", ""))
    on_target = service.get("taskDefinition") == task_definition
    failed_tasks = [
        t
        for t in tasks
        if t.get("taskDefinitionArn") == task_definition and t.get("lastStatus") == "STOPPED"
    ]
    stop_reason = next((str(t.get("stoppedReason", "")) for t in failed_tasks), "")
    if refreshed:
        conds = set_condition(
            conds,
            type="SecretsRefreshed",
            status="True",
            reason="NewSecretVersion",
            message=f"new version of {', '.join(sorted(refreshed))} rolled out",
            now=now,
        )
    available = running >= 1
    conds = set_condition(
        conds,
        type="Available",
        status="True" if available else "False",
        reason="TaskRunning" if available else "NoRunningTask",
        message=f"{running} task(s) running" if available else "no task is running yet",
        now=now,
    )
    rolled_back = not on_target or rollout == "FAILED"
    if rolled_back:
        secret = _secret_failure(stop_reason)
        detail = stop_reason or str(primary.get("rolloutStateReason", "")) or "rollout failed"
        message = (
            f"new task could not start and the deployment circuit breaker kept the previous "
            f"task: {detail}"
        )
        conds = set_condition(
            conds,
            type="Progressing",
            status="False",
            reason="RolloutFailed",
            message=message,
            now=now,
        )
        conds = set_condition(
            conds, type="Degraded", status="True", reason="RolloutFailed", message=message, now=now
        )
        conds = set_condition(
            conds,
            type="SecretInjectionFailed",
            status="True" if secret else "False",
            reason="SecretNotInjected" if secret else "SecretsInjected",
            message=(
                "check that every spec.secrets entry exists and that the agent's execution role "
                f"may read it: {detail}"
                if secret
                else "secrets were injected"
            ),
            now=now,
        )
        return Assessment(phase="Failed", conditions=conds, requeue=False, failure=message)
    done = rollout in ("COMPLETED", "") and available
    conds = set_condition(
        conds,
        type="Progressing",
        status="False" if done else "True",
        reason="RolloutCompleted" if done else "RolloutInProgress",
        message=(
            "the current task definition is deployed"
            if done
            else f"deployment {rollout.lower() or 'pending'}: {running} running, "
            f"{int(service.get('pendingCount', 0))} pending"
        ),
        now=now,
    )
    conds = set_condition(
        conds, type="Degraded", status="False", reason="AsExpected", message="", now=now
    )
    if get_condition(conds, "SecretInjectionFailed") is not None:
        conds = set_condition(
            conds,
            type="SecretInjectionFailed",
            status="False",
            reason="SecretsInjected",
            message="secrets were injected",
            now=now,
        )
    return Assessment(phase="Running" if done else "Pending", conditions=conds, requeue=not done)


class Reconciler:
    """Reconciles agents against one cluster; one instance per replica, shared by its workers."""

    def __init__(
        self,
        *,
        manifests: Manifests,
        ecs: EcsAdapter,
        s3: Any,
        bucket: str,
        secrets: SecretVersions,
        context: render.RenderContext,
        wall: Callable[[], float],
        config: ReconcileConfig | None = None,
        limiter: RateLimiter | None = None,
        snapshots: SnapshotRecords | None = None,
        ingress: IngressReconciler | None = None,
    ) -> None:
        self._manifests = manifests
        self._ingress = ingress
        # Defaults to the control-plane bucket's records: the replica needs no extra wiring.
        self._snapshots = snapshots if snapshots is not None else S3SnapshotRecords(s3, bucket)
        self._ecs = ecs
        self._s3 = s3
        self._bucket = bucket
        self._secrets = secrets
        self._ctx = context
        self._wall = wall
        self._config = config or ReconcileConfig()
        self._limiter = limiter or RateLimiter({})

    # ------------------------------------------------------------------ entry
    def reconcile(
        self,
        req: Request,
        *,
        status: AgentStatus,
        log: CallLog,
        guard: Callable[[], bool] | None = None,
    ) -> Result:
        """One level-based run for ``req.key``; raises :mod:`oab.controller.base.errors` types."""
        with step("read_manifest") as span:
            manifest = self._manifests.read(req.key)
            span.set_attribute("oab.manifest.found", manifest is not None)
        if manifest is None or manifest.deleted:
            return self._delete(req, status, manifest, log, guard)
        result = self._apply(req, status, manifest, log, guard)
        result = self._ingress_pass(req, manifest, result, log, guard)
        return self._ingest_snapshots(req, status, manifest, result, log)

    def _ingress_pass(
        self,
        req: Request,
        manifest: Manifest,
        result: Result,
        log: CallLog,
        guard: Callable[[], bool] | None,
    ) -> Result:
        """Webhook ingress after the ECS service (oab.controller.reconcile.ingress): ensure it
        while ``spec.ingress`` is set, tear down the agent's own resources once it is not."""
        st = result.status
        svc = manifest.service
        if self._ingress is None or st.phase in (None, "Terminating"):
            return result
        if svc.spec.ingress is None and not st.ingress:
            return result
        name = render.service_name(svc.metadata.namespace, svc.metadata.name)
        now = iso(self._wall())
        if svc.spec.ingress is None:
            run = self._ingress.remove(
                key=req.key,
                status=st,
                service=self._ecs.describe_service(name),
                log=log,
                guard=guard,
                now=now,
            )
        else:
            run = self._ingress.ensure(
                svc=svc,
                status=st,
                describe=lambda: self._ecs.describe_service(name),
                resync=req.run.origin.cause is Cause.RESYNC,
                log=log,
                guard=guard,
                now=now,
            )
        waits = [w for w in (result.requeue_after, run.requeue_after) if w is not None]
        return replace(
            result,
            status=replace(
                st, ingress=run.ingress, webhook_urls=run.urls, conditions=run.conditions
            ),
            requeue_after=min(waits) if waits else None,
        )

    def _ingest_snapshots(
        self, req: Request, status: AgentStatus, manifest: Manifest, result: Result, log: CallLog
    ) -> Result:
        """Add the agent's new snapshot records to this run's audit row
        (oab.controller.adapters.snapshots).

        Done last, once the run succeeded, so the calls and the advanced marker are committed
        together or not at all; a failed listing only postpones ingestion to a later run.
        """
        if (
            manifest.service.spec.bootstrap_from is None
            or result.status.phase in (None, "Terminating")
            or not wants_ingest(cause=req.run.origin.cause, phase=status.phase)
        ):
            return result
        with step("snapshots.ingest") as span:
            try:
                found = self._snapshots.after(
                    req.key, marker=status.last_snapshot, limit=MAX_RECORDS_PER_RUN
                )
            except OabError as exc:
                span.record_exception(exc)
                return result
            span.set_attribute("oab.snapshots.ingested", len(found))
        if not found:
            return result
        for call in calls_for(found):
            log.add(call)
        return replace(result, status=replace(result.status, last_snapshot=found[-1].key))

    # ------------------------------------------------------------------ apply
    def _apply(
        self,
        req: Request,
        status: AgentStatus,
        manifest: Manifest,
        log: CallLog,
        guard: Callable[[], bool] | None,
    ) -> Result:
        """Converge the ECS service on ``manifest``: versions, render, task definition, create
        or update at the count the schedule sets, then observe the rollout."""
        svc = manifest.service
        meta = svc.metadata
        generation = int(meta.generation or 0)
        if status.phase == "Terminating":
            # Revived while being deleted: finish the cleanup (keeping the manifest), then
            # create the agent afresh in the next run.
            done = self._delete(req, status, None, log, guard)
            if done.requeue_after is not None:
                return done
            return replace(done, requeue_after=0.0)
        now = iso(self._wall())
        seen = self._versions(req, status, manifest)
        marker = meta.annotations.get(RESTART_ANNOTATION, "")
        restart = bool(marker) and marker != status.restart_marker
        force = bool(seen.rotated) or restart

        with step("render") as span:
            td_request = render.render_task_definition(svc, self._ctx)
            content_hash = render.task_definition_hash(td_request)
            span.set_attribute("oab.content_hash", content_hash)
        name = render.service_name(meta.namespace, meta.name)
        with step("describe_service", {"oab.service": name}) as span:
            service = self._ecs.describe_service(name)
            span.set_attribute("oab.service.exists", service is not None)
        # Desired count from spec.suspend and spec.schedules at this instant (core/schedule.py).
        plan = schedules.Plan.of(svc.spec)
        at = schedules.evaluation_instant(self._wall(), req.run.origin.at)
        level = plan.level(at)
        count_before = int(service.get("desiredCount", 0)) if service is not None else None
        _refuse_rival(service, req.key, name)
        _adopt(service, status, name, log)

        base = replace(
            status,
            service_arn=str(service["serviceArn"]) if service is not None else status.service_arn,
            observed_generation=generation,
            manifest_etag=manifest.etag,
            task_definition_hash=content_hash,
            secret_versions=seen.versions,
            watched_secrets=seen.watched,
            restart_marker=marker,
            last_reconciled=now,
            last_error="",
            attempts=req.run.attempt,
            last_run_id=req.run.run_id,
        )
        if (
            status.failed_hash == content_hash
            and not force
            and service is not None
            and count_before == level.replicas
        ):
            # This exact content already failed to roll out; observe, do not redeploy.
            observed = self._observe(base, service, status.task_definition_arn, (), now)
            return self._leveled(observed, service, plan=plan, level=level, at=at, now=now)

        with step("task_definition") as span:
            td_arn = self._task_definition(
                svc,
                status=status,
                request=td_request,
                content_hash=content_hash,
                log=log,
                guard=guard,
            )
            span.set_attribute("oab.task_definition", td_arn)
        target = _Target(svc=svc, name=name, task_definition=td_arn, level=level, force=force)
        if service is None:
            service = self._create(target, run=req.run, log=log, guard=guard)
        else:
            service = self._update(target, status=status, service=service, log=log, guard=guard)
        _note_count(log, name=name, before=count_before, level=level)
        observed = self._observe(
            replace(base, task_definition_arn=td_arn, service_arn=str(service["serviceArn"])),
            service,
            td_arn,
            seen.rotated,
            now,
        )
        return self._leveled(observed, service, plan=plan, level=level, at=at, now=now)

    def _versions(self, req: Request, status: AgentStatus, manifest: Manifest) -> _Versions:
        """The secrets' (and the ``configFrom`` object's) versions this run deploys, what is
        watched for auto-restart, and which auto-restart secrets rotated since the last run."""
        svc = manifest.service
        refs = [s.model_dump(mode="json") for s in svc.spec.secrets]
        # Versions are read when a generation is first reconciled and whenever the scheduler
        # found drift (its resync compares auto-restart versions in batches); progress polls of
        # an already observed generation reuse the stored ones (cost: no read per poll).
        fresh = (
            status.observed_generation != int(svc.metadata.generation or 0)
            or req.run.origin.cause is Cause.RESYNC
            or set(status.secret_versions) - {CONFIG_VERSION_KEY} != {r["name"] for r in refs}
        )
        with step("secret_versions", {"oab.secrets.count": len(refs), "oab.fresh": fresh}):
            if refs and fresh:
                versions = self._secrets.versions(refs)
            else:
                versions = dict(status.secret_versions) if refs else {}
        watched = {
            s.name: f"ssm:{s.path}" if s.source == "ssm" else f"secretsmanager:{s.arn}"
            for s in svc.spec.secrets
            if s.auto_restart
        }
        if manifest.config_version and svc.spec.config_from:
            # The configFrom object is watched like a secret (adapters.configsource).
            versions[CONFIG_VERSION_KEY] = manifest.config_version
            watched[CONFIG_VERSION_KEY] = watch_entry(svc.spec.config_from)
        auto = {s.name for s in svc.spec.secrets if s.auto_restart}
        rotated = sorted(
            n for n in auto if status.secret_versions.get(n, "") not in ("", versions.get(n, ""))
        )
        return _Versions(versions=versions, watched=watched, rotated=tuple(rotated))

    def _create(
        self, target: _Target, *, run: RunContext, log: CallLog, guard: Callable[[], bool] | None
    ) -> dict[str, Any]:
        """CreateService at the level's count, idempotent through the unit's token."""
        svc, name = target.svc, target.name
        create = render.render_create_service(
            svc,
            self._ctx,
            task_definition=target.task_definition,
            client_token=client_token(run.token),
        )
        create["desiredCount"] = target.level.replicas
        with step("service.create", {"oab.service": name}), _exec_refusal(svc, name):
            return self._ecs.create_service(create, log=log, guard=guard)

    def _update(
        self,
        target: _Target,
        *,
        status: AgentStatus,
        service: dict[str, Any],
        log: CallLog,
        guard: Callable[[], bool] | None,
    ) -> dict[str, Any]:
        """UpdateService when the service differs from ``target`` (or a new deployment is
        forced); a rollback ECS made of a failed revision is left alone at the same count."""
        svc, name, td_arn = target.svc, target.name, target.task_definition
        # ECS applies enableExecuteCommand to new tasks only: switching it restarts the task.
        exec_now = bool(service.get("enableExecuteCommand"))
        force = target.force or exec_now != svc.spec.exec
        rolled_back = (
            status.task_definition_arn == td_arn
            and service.get("taskDefinition") != td_arn
            and not force
            and status.phase in ("Pending", "Failed")
        )
        if rolled_back and int(service.get("desiredCount", 0)) == target.level.replicas:
            return service
        update = render.render_update_service(
            svc,
            self._ctx,
            task_definition=td_arn,
            force_new_deployment=force,
            exec_enabled=exec_now,
        )
        update["desiredCount"] = target.level.replicas
        if not force and not _differs(service, update):
            return service
        with (
            step("service.update", {"oab.service": name, "oab.forced": force}),
            _exec_refusal(svc, name),
        ):
            return self._ecs.update_service(update, log=log, guard=guard)

    def _leveled(
        self,
        result: Result,
        service: Mapping[str, Any],
        *,
        plan: schedules.Plan,
        level: schedules.Level,
        at: float,
        now: str,
    ) -> Result:
        """``result`` with the schedule's conditions, and phase ``Suspended`` at count 0."""
        conds = result.status.conditions
        marked = any(c.type in ("Suspended", "Scheduled") for c in conds)
        if level.replicas != 0 and not plan.entries and not marked:
            return result  # neither suspended nor scheduled, now or before
        running = int(service.get("runningCount", 0))
        conds, draining = schedules.level_conditions(
            conds,
            plan=plan,
            level=level,
            upcoming=plan.next_transition(at),
            running=running,
            now=now,
        )
        if level.replicas != 0:
            return replace(result, status=replace(result.status, conditions=conds))
        status = replace(
            result.status, phase="Suspended", conditions=conds, last_error="", failed_hash=""
        )
        return Result(
            status=status,
            requeue_after=self._config.progress_poll_s if draining else None,
        )

    def _observe(
        self,
        base: AgentStatus,
        service: Mapping[str, Any],
        td_arn: str,
        rotated: Sequence[str],
        now: str,
    ) -> Result:
        with step("observe", {"oab.service": str(service.get("serviceName", ""))}) as span:
            primary = _primary(service) or {}
            suspicious = (
                service.get("taskDefinition") != td_arn or primary.get("rolloutState") == "FAILED"
            )
            running = int(service.get("runningCount", 0))
            completed = primary.get("rolloutState", "COMPLETED") == "COMPLETED"
            tasks: list[dict[str, Any]] = []
            task_arns: tuple[str, ...] = ()
            if suspicious:
                # Failure details (stop reasons) are only needed when something went wrong.
                tasks = self._ecs.service_tasks(str(service["serviceName"]))
                task_arns = tuple(
                    sorted(str(t["taskArn"]) for t in tasks if t.get("lastStatus") == "RUNNING")
                )
            elif completed and running > 0:
                unchanged = (
                    base.phase == "Running"
                    and base.task_definition_arn == td_arn
                    and len(base.task_arns) == running
                )
                task_arns = (
                    base.task_arns
                    if unchanged
                    else tuple(sorted(self._ecs.running_task_arns(str(service["serviceName"]))))
                )
            verdict = assess(
                service=service,
                task_definition=td_arn,
                tasks=tasks,
                prior=base.conditions,
                refreshed=rotated,
                now=now,
            )
            span.set_attribute("oab.phase", verdict.phase)
            span.set_attribute("oab.rollout_state", str(primary.get("rolloutState", "")))
            span.set_attribute("oab.running_count", running)
            if verdict.failure:
                injection = get_condition(verdict.conditions, "SecretInjectionFailed")
                span.add_event(
                    "rollout.failed",
                    {
                        "oab.failure": verdict.failure,
                        "oab.secret_injection_failed": bool(
                            injection is not None and injection.status == "True"
                        ),
                    },
                )
        after = replace(
            base,
            phase=verdict.phase,
            conditions=verdict.conditions,
            task_arns=task_arns,
            failed_hash=base.task_definition_hash if verdict.phase == "Failed" else "",
            last_error=verdict.failure,
        )
        return Result(
            status=after,
            requeue_after=self._config.progress_poll_s if verdict.requeue else None,
            failure=verdict.failure,
        )

    def _task_definition(
        self,
        svc: OABService,
        *,
        status: AgentStatus,
        request: dict[str, Any],
        content_hash: str,
        log: CallLog,
        guard: Callable[[], bool] | None,
    ) -> str:
        if status.task_definition_hash == content_hash and status.task_definition_arn:
            return status.task_definition_arn
        with step("artifact", {"oab.artifact": render.artifact_key(svc)}):
            fresh = self._write_artifact(svc, log, guard)
        if not fresh:
            # The generation's artifact already existed: an earlier attempt got this far and may
            # have registered the revision before crashing. Reuse it rather than register twice.
            # (A fresh artifact proves no attempt registered yet: registration comes after it.)
            latest = self._ecs.latest_task_definition(str(request["family"]))
            if latest is not None and latest[1].get(CONTENT_HASH_TAG) == content_hash:
                return latest[0]
        return self._ecs.register_task_definition(request, log=log, guard=guard)

    def _write_artifact(
        self, svc: OABService, log: CallLog, guard: Callable[[], bool] | None
    ) -> bool:
        """Write the generation's config.toml once; False when it already existed."""
        key = render.artifact_key(svc)
        body = render.render_config_toml(svc).encode()
        if guard is not None and not guard():
            raise ClaimInDoubt("claim no longer valid locally; refusing PutObject")
        self._limiter.acquire("s3")
        try:
            resp = self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                IfNoneMatch="*",
                ContentType="application/toml",
            )
        except ClientError as exc:
            if precondition_failed(exc, key=key) is not None:
                return False  # written by an earlier attempt: artifacts are write-once
            raise classify_aws(exc, operation="PutObject") from exc
        log.add(
            AwsCall(
                action="s3:PutObject",
                target=f"s3://{self._bucket}/{key}",
                result=str(resp.get("VersionId", "")),
                request_id=str(resp.get("ResponseMetadata", {}).get("RequestId", "")),
            )
        )
        return True

    # ----------------------------------------------------------------- delete
    def _delete(
        self,
        req: Request,
        status: AgentStatus,
        manifest: Manifest | None,
        log: CallLog,
        guard: Callable[[], bool] | None,
    ) -> Result:
        """One step of a deletion, in order: scale the service to 0 and wait for its tasks,
        delete it (recording Terminating first), remove the agent's own ingress, then its task
        definitions, artifacts and manifest, and clear the status. Each step that waits
        requeues; a same-named service of another agent is never touched."""
        namespace, name = req.key.split("/", 1)
        service_name = render.service_name(namespace, name)
        now = iso(self._wall())
        if status.phase is None and manifest is None and not status.service_arn:
            # Nothing was ever created, or deletion already finished: nothing to do.
            return Result(status=status)
        terminating = replace(
            status,
            phase="Terminating",
            last_reconciled=now,
            last_run_id=req.run.run_id,
            attempts=req.run.attempt,
            last_error="",
        )
        with step("describe_service", {"oab.service": service_name}) as span:
            service = self._ecs.describe_service(service_name)
            span.set_attribute("oab.service.exists", service is not None)
        rival = _foreign(service, req.key)
        if rival is not None:
            # Same ECS name, another agent's resources: remove only what is ours by path.
            span.set_attribute("oab.service.owner", rival)
            service = None
        if adopted := _adopt(service, status, service_name, log):
            terminating = replace(terminating, service_arn=adopted)
        if service is not None and (
            waiting := self._delete_service(
                terminating, service, name=service_name, now=now, log=log, guard=guard
            )
        ):
            return waiting
        if status.phase not in (None, "Terminating"):
            # The service is gone (deleted just now, by hand, or never ours): record Terminating
            # first. Only Terminating may end in a cleared status, so the next run finishes.
            return self._step(terminating, "service-deleted", "service gone", now, requeue=True)
        if self._ingress is not None and rival is None and status.ingress:
            return self._delete_ingress(
                self._ingress, req, status, terminating, now=now, log=log, guard=guard
            )
        self._delete_leftovers(req, manifest, ours=rival is None, log=log, guard=guard)
        if status.phase is None and status.audit_seq == 0 and not log.snapshot():
            return Result(status=status)
        return Result(status=cleared(status))

    def _delete_service(
        self,
        terminating: AgentStatus,
        service: Mapping[str, Any],
        *,
        name: str,
        now: str,
        log: CallLog,
        guard: Callable[[], bool] | None,
    ) -> Result | None:
        """Scale to 0, wait for the tasks, then DeleteService: the step to requeue while one is
        under way, ``None`` once the service is deleted."""
        service_name = name
        if int(service.get("desiredCount", 0)) != 0:
            with step("delete.scale_down", {"oab.service": service_name}):
                self._ecs.update_service(
                    {"cluster": self._ecs.cluster, "service": service_name, "desiredCount": 0},
                    log=log,
                    guard=guard,
                )
            return self._step(terminating, "scale-down", "scaling to 0", now, requeue=True)
        if (running := int(service.get("runningCount", 0))) > 0:
            return self._step(
                terminating, "scale-down", f"waiting for {running} task(s)", now, requeue=True
            )
        with step("delete.service", {"oab.service": service_name}):
            self._ecs.delete_service(service_name, log=log, guard=guard)
        return None

    def _delete_ingress(
        self,
        ingress: IngressReconciler,
        req: Request,
        status: AgentStatus,
        terminating: AgentStatus,
        *,
        now: str,
        log: CallLog,
        guard: Callable[[], bool] | None,
    ) -> Result:
        """The agent's own ingress resources, now that no task is registered in Cloud Map."""
        with step("delete.ingress"):
            run = ingress.remove(
                key=req.key, status=status, service=None, log=log, guard=guard, now=now
            )
        if run.requeue_after is not None:
            terminating = replace(terminating, ingress=run.ingress)
            return self._step(terminating, "ingress", "removing webhook ingress", now, requeue=True)
        terminating = replace(terminating, ingress={}, webhook_urls=())
        return self._step(terminating, "ingress-deleted", "webhook ingress gone", now, requeue=True)

    def _delete_leftovers(
        self,
        req: Request,
        manifest: Manifest | None,
        *,
        ours: bool,
        log: CallLog,
        guard: Callable[[], bool] | None,
    ) -> None:
        """The task definitions (unless the ECS name is another agent's), the artifacts and
        the manifest."""
        namespace, name = req.key.split("/", 1)
        if ours:
            with step("delete.task_definitions", {"oab.family": render.family(namespace, name)}):
                for arn in self._ecs.list_task_definitions(render.family(namespace, name)):
                    self._ecs.deregister_task_definition(arn, log=log, guard=guard)
        with step("delete.artifacts"):
            self._delete_prefix(names.artifact_prefix(namespace, name), log, guard)
        if manifest is not None:
            with step("delete.manifest"):
                self._manifests.remove(manifest)
            log.add(AwsCall(action="s3:DeleteObject", target=names.manifest_key(req.key)))

    def _step(
        self, status: AgentStatus, step: str, message: str, now: str, *, requeue: bool
    ) -> Result:
        conds = set_condition(
            status.conditions,
            type="Progressing",
            status="True",
            reason="Terminating",
            message=f"deletion step {step}: {message}",
            now=now,
        )
        return Result(
            status=replace(status, finalizer_step=step, conditions=conds),
            requeue_after=self._config.progress_poll_s if requeue else None,
        )

    def _delete_prefix(self, prefix: str, log: CallLog, guard: Callable[[], bool] | None) -> None:
        paginator = self._s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
            objects = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if not objects:
                continue
            if guard is not None and not guard():
                raise ClaimInDoubt("claim no longer valid locally; refusing DeleteObjects")
            self._limiter.acquire("s3")
            try:
                resp = self._s3.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": objects, "Quiet": True}
                )
            except ClientError as exc:
                raise classify_aws(exc, operation="DeleteObjects") from exc
            log.add(
                AwsCall(
                    action="s3:DeleteObjects",
                    target=f"s3://{self._bucket}/{prefix}",
                    result=f"{len(objects)} object version(s)",
                    request_id=str(resp.get("ResponseMetadata", {}).get("RequestId", "")),
                )
            )


@contextmanager
def _exec_refusal(svc: OABService, name: str) -> Iterator[None]:
    """An ECS refusal of a service request that turns ECS Exec on parks as ``ExecRefused``.

    Only an ``InvalidParameterException`` while ``spec.exec`` is on: the request is otherwise
    one ECS accepted before, so exec is the likely cause and the message says how to go on.
    """
    try:
        yield
    except AwsError as exc:
        if not svc.spec.exec or exc.code != "InvalidParameterException":
            raise
        raise TerminalError(
            f"ECS refused ECS Exec (enableExecuteCommand) for service {name}: {exc}; "
            "check the cluster and platform version support ECS Exec and the agent's task role "
            "grants ssmmessages:CreateControlChannel, CreateDataChannel, OpenControlChannel and "
            "OpenDataChannel, or set spec.exec: false and apply again",
            reason="ExecRefused",
        ) from exc


def _differs(service: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
    """Whether an UpdateService request would change the described service."""
    if service.get("taskDefinition") != update.get("taskDefinition"):
        return True
    if int(service.get("desiredCount", -1)) != int(update.get("desiredCount", 1)):
        return True
    if "enableExecuteCommand" in update and bool(service.get("enableExecuteCommand")) != bool(
        update["enableExecuteCommand"]
    ):
        return True
    for field_name in ("networkConfiguration", "capacityProviderStrategy"):
        want = update.get(field_name)
        have = service.get(field_name)
        if want is not None and have is not None and _norm(want) != _norm(have):
            return True
    want_dc = update.get("deploymentConfiguration")
    have_dc = service.get("deploymentConfiguration")
    return bool(want_dc and have_dc and not _contains(have_dc, want_dc))


def _norm(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _norm(v) for k, v in sorted(value.items()) if k != "base" or v}
    if isinstance(value, list):
        return sorted((_norm(v) for v in value), key=repr)
    return value


def _contains(have: Any, want: Any) -> bool:
    """``want`` is a sub-document of ``have`` (ECS echoes defaults we did not send)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            k in have and _contains(have[k], v) for k, v in want.items()
        )
    return bool(have == want)
