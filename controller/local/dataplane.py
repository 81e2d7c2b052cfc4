"""A simulated ECS data plane inside the local emulator: deployments that progress, tasks that fail.

Design
------
moto stores ECS services but never runs them (see ``../shared/reference/local-aws.md``). This
module runs **inside the emulator process** (``python -m oab.controller.local.emulator
--dataplane``) and drives moto's own ECS backend objects so that the ordinary ECS API
(``DescribeServices``, ``ListTasks``, ``DescribeTasks``) shows deployments and tasks that behave
like real ECS. The product never knows: it talks ECS to ``AWS_ENDPOINT_URL`` as it would to AWS.

Three entry points touch the backend, all under the emulator's **one global request lock**, so
every change is atomic with respect to API requests:

- hooks wrapped around moto's ``CreateService`` / ``UpdateService`` / ``DeleteService`` /
  ``ListTasks`` handlers, so a new deployment is visible in the very response of the call that
  caused it (as in ECS);
- :meth:`DataPlane.step`, run by a background thread every ``tick_s`` (unless paused) and on
  demand through the control API, which moves tasks whose start delay has elapsed;
- the control API (``/_oab/dataplane/...``, served by the emulator before moto sees the request)
  for tests, the demo and chaos runs: configure, inject faults, step, status, reset.

Each simulated service has a list of deployments (the first is ``PRIMARY``) that own their live
tasks. A deployment starts its tasks as ``PROVISIONING``; after ``start_delay_s`` a step moves
each one to ``RUNNING``, or stops it with a secret-injection or crash-loop failure when a fault is
set. A healthy new task replaces an old one within the same step, the deployment becomes
``COMPLETED`` once it runs ``desiredCount`` tasks and every older deployment has drained. After
``circuit_breaker_threshold`` failed tasks the circuit breaker marks the rollout ``FAILED`` and,
with rollback on, starts a rollback deployment of the last ``COMPLETED`` task definition that
adopts the old tasks still running.

Invariants (checked by the tests)
- At the end of every step a service runs at most ``desiredCount`` tasks: never an old and a new
  task together.
- A task that cannot start never causes a running task to stop; the old task keeps running
  through a failed rollout and its rollback.
- The simulator thread never dies: every error is logged, counted and shown in ``status``.
- Work per step is O(services + live tasks); the lock is held for one step only.

Time model
----------
Deadlines use the simulator's monotonic clock; wall time is used only for the timestamps ECS
shows (``createdAt``, ``startedAt``, ...). The default clock is the process clock plus an offset
that ``POST /_oab/dataplane/step {"advance_s": N}`` moves forward, so tests pause the background
thread and step deterministically instead of sleeping.

Differences from real ECS (deliberate or cheap approximations)
--------------------------------------------------------------
- Replacement behaves like ``minimumHealthyPercent=0, maximumPercent=100`` when the new task
  comes up (old task stopped in the same step), but an old task is only stopped once a new one
  actually runs, so a rollout whose tasks cannot start never takes the service down.
- Only tasks, deployments and the counters are simulated: no placement, health checks, load
  balancers, start back-off or container instances. Every launch takes ``start_delay_s``.
- A rollback deployment adopts the old deployment's still-running tasks of the same task
  definition instead of replacing them, so the very same task keeps running.
- When ``CreateService`` carries no ``deploymentConfiguration`` the circuit breaker is treated as
  enabled with rollback (``rollback_by_default``); real ECS defaults to disabled. The threshold
  is ``max(circuit_breaker_threshold, ceil(desiredCount / 2))``, capped at 200, as in ECS.
- A ``FAILED`` deployment stays listed as ``ACTIVE`` for ``failed_deployment_linger_s`` after the
  breaker trips so pollers can observe it.
- ``CreateService`` stores ``deploymentConfiguration``, ``capacityProviderStrategy`` and
  ``enableExecuteCommand`` (moto drops them) and echoes them back; with a strategy, ``launchType``
  is not reported. With ``strict_create`` a create over an ``ACTIVE`` service of the same name is
  refused (``InvalidParameterException: Creation of service was not idempotent.``) unless it
  carries the same ``clientToken``, in which case the existing service is returned; moto alone
  silently replaces the service.
- ``ListTasks`` honours ``serviceName`` (moto ignores it) and defaults ``desiredStatus`` to
  ``RUNNING`` like ECS. Stopped tasks stay describable for ``stopped_task_retention_s``, at most
  ``max_stopped_tasks_per_service`` per service.
- ``DeleteService`` stops the service's tasks at once (ECS drains them over seconds).
- ``ExecuteCommand`` (moto has none) is answered from the simulated tasks, see
  :mod:`oab.controller.local.dataplane_exec`; tasks carry ``enableExecuteCommand`` from their
  service at launch, container runtime ids and the ExecuteCommandAgent.
- Fault by secret: a task fails when any container's ``secrets[].valueFrom`` (or
  ``repositoryCredentials.credentialsParameter``) starts with a failing ``value_from`` prefix.

Layout: the control API's settings, request bodies, errors and client are in
:mod:`oab.controller.local.dataplane_control` (re-exported here); what knows moto's object model is
in :mod:`oab.controller.local.dataplane_moto`. This module is the simulator.

This module is local/testing tooling: product code never imports it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NewType, Protocol

from pydantic import ValidationError

# The control API's models, errors and client live apart (no moto there); re-exported here so
# ``from oab.controller.local.dataplane import DataPlaneControl`` keeps working.
from oab.controller.base.clock import Clock
from oab.controller.local.dataplane_control import (
    CONTROL_PREFIX,
    ControlRequestError,
    DataPlaneConfig,
    DataPlaneControl,
    DataPlaneError,
    FaultMode,
    SecretFault,
    ServiceFault,
    StepRequest,
)
from oab.controller.local.dataplane_exec import ExecSessions, exec_fields
from oab.controller.local.dataplane_moto import (
    TaskDefinitionView,
    attach_eni,
    ecs_backends,
    new_container,
    release_enis,
    resolve_task_definition,
    secret_refs,
    sim_task_class,
)

__all__ = [
    "CONTROL_PREFIX",
    "ControlRequestError",
    "DataPlane",
    "DataPlaneConfig",
    "DataPlaneControl",
    "DataPlaneError",
    "DeploymentId",
    "FaultMode",
]

log = logging.getLogger(__name__)

DeploymentId = NewType("DeploymentId", str)

_STATE_ATTR = "_oab_dataplane"  # private attribute on moto's Service; the serializer ignores it
_MAX_EVENTS = 100
_LIVE = frozenset({"PROVISIONING", "PENDING", "ACTIVATING", "RUNNING"})
_BREAKER_REASON = "ECS deployment circuit breaker: tasks failed to start."


# ---------------------------------------------------------------------------------------- clock
class SimClock(Clock, Protocol):
    """The controller's :class:`~oab.controller.base.clock.Clock` (``monotonic`` for deadlines,
    ``time`` for shown timestamps only) that a test can also move forward
    (``oab.controller.testing.FakeClock`` fits)."""

    def advance(self, seconds: float) -> None:
        """Move the clock forward (``step`` with ``advance_s``)."""
        ...


class OffsetClock:
    """The process clock plus an offset that only grows: real time that tests can skip ahead."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """Process monotonic time plus the skipped-ahead offset."""
        with self._lock:
            return time.monotonic() + self._offset

    def time(self) -> float:
        """Wall time plus the skipped-ahead offset."""
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Skip ``seconds`` ahead on both readings."""
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        with self._lock:
            self._offset += seconds

    def sleep(self, seconds: float) -> None:
        """``time.sleep(seconds)`` (real time; skipping ahead is :meth:`advance`)."""
        time.sleep(max(0.0, seconds))


def _random_deployment_id() -> DeploymentId:
    # ECS deployment ids look like ``ecs-svc/1234567890123456789``.
    return DeploymentId(f"ecs-svc/{random.SystemRandom().randrange(10**18, 10**19)}")


# ------------------------------------------------------------------------------ simulated state
@dataclass
class _Deployment:
    id: DeploymentId
    task_definition: str
    desired_count: int
    created_mono: float
    created_wall: float
    updated_wall: float
    status: str = "PRIMARY"
    rollout_state: str = "IN_PROGRESS"
    rollout_reason: str = ""
    failed_tasks: int = 0
    failed_mono: float | None = None
    launching: bool = True  # false once the breaker tripped: no more launches
    tasks: list[Any] = field(default_factory=list)  # live moto Task objects

    def running(self) -> int:
        return sum(1 for t in self.tasks if t.last_status == "RUNNING")

    def pending(self) -> int:
        return sum(1 for t in self.tasks if t.last_status in _LIVE and t.last_status != "RUNNING")


@dataclass
class _ServiceState:
    backend: Any
    deployments: list[_Deployment]
    client_token: str | None = None
    last_completed_task_definition: str | None = None
    stopped: list[tuple[float, Any]] = field(default_factory=list)  # (stopped at, task)

    @property
    def primary(self) -> _Deployment:
        return self.deployments[0]


# ------------------------------------------------------------------------------------ simulator
class DataPlane:
    """The simulator: owns no storage of its own, it annotates and drives moto's ECS backend.

    Every public method except :meth:`start`, :meth:`stop` and :meth:`handle_control` expects
    the caller to hold ``lock`` (the emulator's global request lock).
    """

    def __init__(
        self,
        lock: threading.Lock,
        *,
        config: DataPlaneConfig | None = None,
        clock: SimClock | None = None,
        deployment_ids: Callable[[], DeploymentId] = _random_deployment_id,
    ) -> None:
        self._lock = lock
        self._initial = config or DataPlaneConfig()
        self.config = self._initial
        self._clock: SimClock = clock or OffsetClock()
        self._ids = deployment_ids
        self._service_faults: dict[tuple[str, str], FaultMode] = {}
        self._secret_faults: dict[str, FaultMode] = {}
        self._tracked: dict[int, Any] = {}  # id(service) -> service, to notice replaced ones
        self._exec = ExecSessions()  # ECS ExecuteCommand (oab.controller.local.dataplane_exec)
        self.steps = 0
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- background thread
    def start(self) -> None:
        """Start the background stepping thread (daemon)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="oab-dataplane", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.config.tick_s):
            with self._lock:
                if self.config.paused:
                    continue
                self.step()

    # ------------------------------------------------------------------------ stepping
    def step(self) -> None:
        """Advance every simulated service to the current time. Never raises."""
        self.steps += 1
        for backend in ecs_backends():
            for service in list(backend.services.values()):
                self._guarded(self._advance_service, service, backend)
        self._guarded(self._forget_replaced)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # the emulator must outlive any simulator bug
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("data plane step failed")

    def _forget_replaced(self) -> None:
        # A service object no longer in its backend (replaced by a create, or the account was
        # reset) must not leave tasks running behind it.
        live = {id(s) for b in ecs_backends() for s in b.services.values()}
        for key in [k for k in self._tracked if k not in live]:
            service = self._tracked.pop(key)
            state: _ServiceState | None = getattr(service, _STATE_ATTR, None)
            if state is not None:
                for dep in state.deployments:
                    for task in list(dep.tasks):
                        self._stop_task(service, state, dep, task, reason="Service replaced")

    def sync(self, service: Any, backend: Any) -> None:
        """Notice API changes to ``service`` (new deployment, scale, delete) and render it."""
        state = self._state(service, backend)
        if state is None:
            return
        self._observe(service, state)
        self._render(service, state)

    def _state(self, service: Any, backend: Any) -> _ServiceState | None:
        state: _ServiceState | None = getattr(service, _STATE_ATTR, None)
        if state is not None:
            return state
        moto_deployments = getattr(service, "deployments", None) or []
        if not moto_deployments or not service.task_definition:
            return None  # EXTERNAL / CODE_DEPLOY controllers or no task definition: not ours
        td = resolve_task_definition(backend, service.task_definition)
        service.task_definition = td
        now_w = self._clock.time()
        first = _Deployment(
            id=DeploymentId(str(moto_deployments[0]["id"])),
            task_definition=td,
            desired_count=int(service.desired_count),
            created_mono=self._clock.monotonic(),
            created_wall=now_w,
            updated_wall=now_w,
        )
        first.rollout_reason = f"ECS deployment {first.id} in progress."
        state = _ServiceState(backend=backend, deployments=[first])
        setattr(service, _STATE_ATTR, state)
        self._tracked[id(service)] = service
        return state

    def _advance_service(self, service: Any, backend: Any) -> None:
        state = self._state(service, backend)
        if state is None:
            return
        self._observe(service, state)
        if service.status == "ACTIVE":
            self._start_due_tasks(service, state)
            self._replace_old_tasks(service, state)
            self._retire_deployments(service, state)
            self._complete_primary(service, state)
            self._launch(service, state)
        self._prune_stopped(service, state)
        self._render(service, state)

    def _observe(self, service: Any, state: _ServiceState) -> None:
        primary = state.primary
        if service.status != "ACTIVE":
            for dep in state.deployments:
                for task in list(dep.tasks):
                    self._stop_task(
                        service, state, dep, task, reason=f"Service {service.name} was deleted"
                    )
            return
        self._sweep_external_stops(state)
        service.task_definition = resolve_task_definition(state.backend, service.task_definition)
        rendered = service.deployments[0]["id"] if service.deployments else primary.id
        if service.task_definition != primary.task_definition or rendered != primary.id:
            # moto's forceNewDeployment only rewrites the primary's id: that is our signal.
            self._new_deployment(service, state, service.task_definition)
        state.primary.desired_count = int(service.desired_count)
        self._launch(service, state)

    def _sweep_external_stops(self, state: _ServiceState) -> None:
        # StopTask through the API (a person, a chaos run) ends a task behind the simulator's
        # back; like the ECS service scheduler, forget it here so _launch replaces it.
        for dep in state.deployments:
            for task in [t for t in dep.tasks if t.last_status not in _LIVE]:
                dep.tasks.remove(task)
                task.desired_status = "STOPPED"
                task.stop_code = getattr(task, "stop_code", None) or "UserInitiated"
                task.stopped_at = getattr(task, "stopped_at", None) or _dt(self._clock.time())
                for c in task.containers:
                    c.last_status = "STOPPED"
                release_enis(state.backend, task)
                state.stopped.append((self._clock.monotonic(), task))

    def _new_deployment(
        self, service: Any, state: _ServiceState, task_definition: str, *, adopt: bool = False
    ) -> _Deployment:
        now_m, now_w = self._clock.monotonic(), self._clock.time()
        old = state.primary
        old.status = "ACTIVE"
        old.updated_wall = now_w
        # Tasks of a superseded deployment that never started are abandoned, as ECS does.
        for task in [t for t in old.tasks if t.last_status != "RUNNING"]:
            self._stop_task(service, state, old, task, reason=_scaling_reason(old.id))
        dep = _Deployment(
            id=self._ids(),
            task_definition=task_definition,
            desired_count=int(service.desired_count),
            created_mono=now_m,
            created_wall=now_w,
            updated_wall=now_w,
        )
        dep.rollout_reason = f"ECS deployment {dep.id} in progress."
        if adopt:
            for other in state.deployments:
                for task in [t for t in other.tasks if t.task_definition_arn == task_definition]:
                    other.tasks.remove(task)
                    dep.tasks.append(task)
        state.deployments.insert(0, dep)
        return dep

    def _launch(self, service: Any, state: _ServiceState) -> None:
        dep = state.primary
        if service.status != "ACTIVE" or not dep.launching:
            return
        surplus = len(dep.tasks) - dep.desired_count
        # Scale in: stop tasks that never started first, then running ones.
        for task in sorted(dep.tasks, key=lambda t: t.last_status == "RUNNING")[: max(0, surplus)]:
            self._stop_task(service, state, dep, task, reason=_scaling_reason(dep.id))
        started = []
        for _ in range(max(0, -surplus)):
            task = self._new_task(service, state, dep)
            if task is None:
                break
            started.append(task.id)
        if started:
            self._event(
                service,
                f"(service {service.name}) has started {len(started)} tasks: "
                + " ".join(f"(task {tid})" for tid in started)
                + ".",
            )

    def _new_task(self, service: Any, state: _ServiceState, dep: _Deployment) -> Any:
        backend = state.backend
        cluster = backend.clusters.get(service.cluster_name)
        if cluster is None:
            return None
        td = backend.describe_task_definition(dep.task_definition)
        strategy = getattr(service, "capacity_provider_strategy", None) or []
        # moto's Task builds its ENI attachment in a way that fails unless the VPC has DNS
        # hostnames enabled; hand it a network-less view of the task definition and attach the
        # ENI here instead.
        task = sim_task_class()(
            cluster,
            TaskDefinitionView(arn=td.arn, container_definitions=td.container_definitions),
            None,
            None,
            backend,
            group=f"service:{service.name}",
            launch_type=service.launch_type or "",
            started_by=dep.id,
            platform_version=service.platform_version,
            capacity_provider_name=strategy[0].get("capacityProvider") if strategy else None,
        )
        if td.network_mode == "awsvpc":
            attach_eni(backend, task, service.network_configuration or {})
        now_w = self._clock.time()
        task.last_status = "PROVISIONING"
        task.desired_status = "RUNNING"
        task.created_at = _dt(now_w)
        task.stop_code = None
        task.connectivity = "CONNECTED"
        task.due_mono = self._clock.monotonic() + self.config.start_delay_s
        task.containers = [new_container(td, task, spec) for spec in td.container_definitions]
        exec_fields(task, enabled=bool(getattr(service, "enable_execute_command", False)))
        backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
        dep.tasks.append(task)
        return task

    def _start_due_tasks(self, service: Any, state: _ServiceState) -> None:
        dep = state.primary
        now_m, now_w = self._clock.monotonic(), self._clock.time()
        for task in [t for t in dep.tasks if t.last_status != "RUNNING"]:
            if task.due_mono > now_m:
                continue
            mode, secret = self._fault_for(service, state, task)
            if mode == "secret-injection":
                self._stop_task(
                    service,
                    state,
                    dep,
                    task,
                    reason=_secret_reason(secret),
                    stop_code="TaskFailedToStart",
                    started=False,
                )
                self._task_failed(service, state, dep)
                continue
            task.last_status = "RUNNING"
            task.started_at = task.pull_started_at = task.pull_stopped_at = _dt(now_w)
            for c in task.containers:
                c.last_status = "RUNNING"
            if mode == "crash-loop":
                self._stop_task(
                    service,
                    state,
                    dep,
                    task,
                    reason="Essential container in task exited",
                    stop_code="EssentialContainerExited",
                    exit_code=1,
                )
                self._task_failed(service, state, dep)

    def _task_failed(self, service: Any, state: _ServiceState, dep: _Deployment) -> None:
        dep.failed_tasks += 1
        dep.updated_wall = self._clock.time()
        threshold = min(
            200, max(self.config.circuit_breaker_threshold, math.ceil(dep.desired_count / 2))
        )
        enabled, rollback = self._breaker(service)
        if not enabled or dep.failed_tasks < threshold or not dep.launching:
            return
        dep.launching = False
        dep.rollout_state = "FAILED"
        dep.rollout_reason = _BREAKER_REASON
        dep.failed_mono = self._clock.monotonic()
        self._event(
            service,
            f"(service {service.name}) (deployment {dep.id}) deployment failed: "
            "tasks failed to start.",
        )
        target = state.last_completed_task_definition
        if not rollback or target is None or dep is not state.primary:
            return
        back = self._new_deployment(service, state, target, adopt=True)
        service.task_definition = target
        self._event(
            service,
            f"(service {service.name}) rolling back to deployment {back.id} "
            f"(task definition {target}).",
        )

    def _breaker(self, service: Any) -> tuple[bool, bool]:
        conf = getattr(service, "deployment_configuration", None)
        breaker = (conf or {}).get("deploymentCircuitBreaker") if conf else None
        if breaker is None:
            default = self.config.rollback_by_default
            return default, default
        return bool(breaker.get("enable")), bool(breaker.get("rollback"))

    def _replace_old_tasks(self, service: Any, state: _ServiceState) -> None:
        primary = state.primary
        allowed = max(0, primary.desired_count - primary.running())
        old_running = [(dep, t) for dep in state.deployments[1:] for t in dep.tasks]
        # Keep the newest old tasks; the rest make room for the new deployment's.
        for dep, task in old_running[allowed:]:
            self._stop_task(service, state, dep, task, reason=_scaling_reason(primary.id))

    def _retire_deployments(self, service: Any, state: _ServiceState) -> None:
        now_m = self._clock.monotonic()
        keep = [state.primary]
        for dep in state.deployments[1:]:
            lingering = (
                dep.failed_mono is not None
                and now_m < dep.failed_mono + self.config.failed_deployment_linger_s
            )
            if dep.tasks or lingering:
                keep.append(dep)
        state.deployments = keep

    def _complete_primary(self, service: Any, state: _ServiceState) -> None:
        dep = state.primary
        drained = all(not d.tasks for d in state.deployments[1:])
        if (
            dep.rollout_state == "IN_PROGRESS"
            and drained
            and dep.running() == dep.desired_count
            and dep.pending() == 0
            and self._clock.monotonic() >= dep.created_mono + min(self.config.start_delay_s, 1.0)
        ):
            dep.rollout_state = "COMPLETED"
            dep.rollout_reason = f"ECS deployment {dep.id} completed."
            dep.updated_wall = self._clock.time()
            state.last_completed_task_definition = dep.task_definition
            self._event(service, f"(service {service.name}) has reached a steady state.")

    def _stop_task(
        self,
        service: Any,
        state: _ServiceState,
        dep: _Deployment,
        task: Any,
        *,
        reason: str,
        stop_code: str = "ServiceSchedulerInitiated",
        exit_code: int | None = 0,
        started: bool = True,
    ) -> None:
        now_w = self._clock.time()
        was_running = task.last_status == "RUNNING"
        task.last_status = "STOPPED"
        task.desired_status = "STOPPED"
        task.stopped_reason = reason
        task.stop_code = stop_code
        task.stopping_at = task.stopped_at = task.execution_stopped_at = _dt(now_w)
        for c in task.containers:
            c.last_status = "STOPPED"
            if was_running and started:
                c.exitCode = exit_code if c.essential else 0
            else:
                c.exitCode = None  # the container never ran
                if stop_code == "TaskFailedToStart":
                    c.reason = reason
        release_enis(state.backend, task)
        if task in dep.tasks:
            dep.tasks.remove(task)
        state.stopped.append((self._clock.monotonic(), task))
        if was_running and stop_code == "ServiceSchedulerInitiated":
            self._event(
                service, f"(service {service.name}) has stopped 1 running tasks: (task {task.id})."
            )

    def _prune_stopped(self, service: Any, state: _ServiceState) -> None:
        horizon = self._clock.monotonic() - self.config.stopped_task_retention_s
        cap = self.config.max_stopped_tasks_per_service
        excess = max(0, len(state.stopped) - cap)
        keep: list[tuple[float, Any]] = []
        for i, (at, task) in enumerate(state.stopped):
            if i < excess or at < horizon:
                state.backend.tasks.get(task.cluster_name, {}).pop(task.task_arn, None)
            else:
                keep.append((at, task))
        state.stopped = keep

    def _fault_for(
        self, service: Any, state: _ServiceState, task: Any
    ) -> tuple[FaultMode | None, str | None]:
        refs = list(secret_refs(state.backend, task.task_definition_arn))
        for ref in refs:
            for prefix, mode in self._secret_faults.items():
                if ref.startswith(prefix):
                    return mode, ref
        service_mode = self._service_faults.get((service.cluster_name, service.name))
        return service_mode, (refs[0] if refs else None)

    def _render(self, service: Any, state: _ServiceState) -> None:
        strategy = getattr(service, "capacity_provider_strategy", None)
        rendered = []
        for dep in state.deployments:
            item: dict[str, Any] = {
                "id": dep.id,
                "status": dep.status,
                "taskDefinition": dep.task_definition,
                "desiredCount": dep.desired_count,
                "pendingCount": dep.pending(),
                "runningCount": dep.running(),
                "failedTasks": dep.failed_tasks,
                "createdAt": _dt(dep.created_wall),
                "updatedAt": _dt(dep.updated_wall),
                "platformVersion": service.platform_version,
                "platformFamily": "Linux" if service.launch_type != "EC2" else None,
                "rolloutState": dep.rollout_state,
                "rolloutStateReason": dep.rollout_reason,
            }
            if service.network_configuration:
                item["networkConfiguration"] = service.network_configuration
            if strategy:
                item["capacityProviderStrategy"] = strategy
            elif service.launch_type:
                item["launchType"] = service.launch_type
            rendered.append(item)
        service.deployments = rendered
        service.running_count = sum(d.running() for d in state.deployments)
        service.pending_count = sum(d.pending() for d in state.deployments)

    def _event(self, service: Any, message: str) -> None:
        events = list(getattr(service, "events", None) or [])
        events.insert(
            0, {"id": str(uuid.uuid4()), "createdAt": _dt(self._clock.time()), "message": message}
        )
        service.events = events[:_MAX_EVENTS]

    # ------------------------------------------------------------------- API hooks
    def on_create_service(self, response: Any, original: Callable[[Any], Any]) -> Any:
        """Wrap moto's CreateService: refuse duplicates, keep dropped fields, start deploying."""
        backend = response.ecs_backend
        cluster = response._get_param("cluster", "default").split("/")[-1]
        name = response._get_param("serviceName")
        token = response._get_param("clientToken")
        existing = backend.services.get(f"{cluster}:{name}")
        if self.config.strict_create and existing is not None and existing.status == "ACTIVE":
            state = getattr(existing, _STATE_ATTR, None)
            if token and state is not None and state.client_token == token:
                from moto.core.responses import ActionResult

                return ActionResult({"service": existing})
            from moto.ecs.exceptions import InvalidParameterException

            raise InvalidParameterException("Creation of service was not idempotent.")
        result = original(response)
        service = backend.services.get(f"{cluster}:{name}")
        if service is None:
            return result
        for param, attr in (
            ("deploymentConfiguration", "deployment_configuration"),
            ("capacityProviderStrategy", "capacity_provider_strategy"),
            ("enableExecuteCommand", "enable_execute_command"),
            ("healthCheckGracePeriodSeconds", "health_check_grace_period_seconds"),
        ):
            value = response._get_param(param)
            if value is not None:
                setattr(service, attr, value)
        if getattr(service, "capacity_provider_strategy", None):
            service.launch_type = None  # ECS reports one or the other
        self._guarded(self.sync, service, backend)
        state = getattr(service, _STATE_ATTR, None)
        if state is not None:
            state.client_token = token
        return result

    def on_service_changed(self, response: Any, original: Callable[[Any], Any]) -> Any:
        """Wrap moto's UpdateService / DeleteService so the response shows the new deployment."""
        cluster = response._get_param("cluster", "default")
        name = str(response._get_param("service")).split("/")[-1]
        result = original(response)
        backend = response.ecs_backend
        service = backend.services.get(f"{cluster.split('/')[-1]}:{name}")
        if service is not None:
            self._guarded(self.sync, service, backend)
        return result

    def on_list_tasks(self, response: Any, original: Callable[[Any], Any]) -> Any:
        """ListTasks with ECS's ``serviceName`` filter and ``desiredStatus=RUNNING`` default."""
        from moto.core.responses import ActionResult

        backend = response.ecs_backend
        tasks = backend.list_tasks(
            response._get_param("cluster", "default"),
            response._get_param("containerInstance"),
            response._get_param("family"),
            response._get_param("startedBy"),
            None,
            response._get_param("desiredStatus") or "RUNNING",
        )
        service_name = response._get_param("serviceName")
        if service_name:
            group = f"service:{str(service_name).split('/')[-1]}"
            tasks = [t for t in tasks if t.group == group]
        return ActionResult({"taskArns": [t.task_arn for t in tasks]})

    def on_reset(self) -> None:
        """moto's account reset: forget faults, tracked services and configuration changes."""
        self._service_faults.clear()
        self._secret_faults.clear()
        self._tracked.clear()
        self._exec.reset()
        self.config = self._initial

    # --------------------------------------------------------------- control API
    def handle_control(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        """Serve ``/_oab/dataplane/<action>`` (JSON in, JSON out); takes the global lock."""
        action = str(environ.get("PATH_INFO", ""))[len(CONTROL_PREFIX) :].strip("/")
        method = str(environ.get("REQUEST_METHOD", "GET"))
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            body: dict[str, Any] = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            with self._lock:
                status, payload = self._control(method, action, body)
        except (ValidationError, ValueError) as exc:
            status, payload = 400, {"error": str(exc)}
        except Exception as exc:  # never let a control call take the emulator down
            log.exception("data plane control failed")
            status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(payload, default=str).encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Error'}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]

    def _control(self, method: str, action: str, body: dict[str, Any]) -> tuple[int, Any]:
        if method == "GET" and action == "status":
            return 200, self.status()
        if method == "GET" and action.startswith("exec/"):
            session = self._exec.session(action.removeprefix("exec/"))
            return (200, session) if session is not None else (404, {"error": "no such session"})
        if method != "POST":
            return 405, {"error": f"{method} not allowed"}
        if action == "configure":
            self.config = DataPlaneConfig.model_validate({**self.config.model_dump(), **body})
        elif action == "fault/service":
            fault = ServiceFault.model_validate(body)
            key = (fault.cluster.split("/")[-1], fault.service.split("/")[-1])
            if fault.mode is None:
                self._service_faults.pop(key, None)
            else:
                self._service_faults[key] = fault.mode
        elif action == "fault/secret":
            secret = SecretFault.model_validate(body)
            if secret.mode is None:
                self._secret_faults.pop(secret.value_from, None)
            else:
                self._secret_faults[secret.value_from] = secret.mode
        elif action == "step":
            self._clock.advance(StepRequest.model_validate(body).advance_s)
            self.step()
        elif action == "reset":
            self.on_reset()
        else:
            return 404, {"error": f"unknown action {action!r}"}
        return 200, self.status()

    def status(self) -> dict[str, Any]:
        """Configuration, faults, counters and a summary of every simulated service."""
        services = []
        for backend in ecs_backends():
            for service in backend.services.values():
                state: _ServiceState | None = getattr(service, _STATE_ATTR, None)
                if state is None:
                    continue
                services.append(
                    {
                        "cluster": service.cluster_name,
                        "service": service.name,
                        "status": service.status,
                        "deployments": [
                            {
                                "id": d.id,
                                "status": d.status,
                                "rolloutState": d.rollout_state,
                                "taskDefinition": d.task_definition,
                                "running": d.running(),
                                "pending": d.pending(),
                                "failedTasks": d.failed_tasks,
                            }
                            for d in state.deployments
                        ],
                    }
                )
        return {
            "config": self.config.model_dump(),
            "faults": {
                "services": [
                    {"cluster": c, "service": s, "mode": m}
                    for (c, s), m in sorted(self._service_faults.items())
                ],
                "secrets": [
                    {"value_from": v, "mode": m} for v, m in sorted(self._secret_faults.items())
                ],
            },
            "steps": self.steps,
            "errors": self.errors,
            "last_error": self.last_error,
            "monotonic": self._clock.monotonic(),
            "services": services,
        }

    # ------------------------------------------------------------------ install
    def install(self) -> None:
        """Wrap moto's ECS handlers in this process so API calls reach the simulator."""
        from moto.ecs.responses import EC2ContainerServiceResponse as Responses

        def wrap(name: str, hook: Callable[[Any, Callable[[Any], Any]], Any]) -> None:
            original = getattr(Responses, f"_oab_original_{name}", None) or getattr(Responses, name)
            setattr(Responses, f"_oab_original_{name}", original)

            def handler(response: Any) -> Any:
                return hook(response, original)

            setattr(Responses, name, handler)

        wrap("create_service", self.on_create_service)
        wrap("update_service", self.on_service_changed)
        wrap("delete_service", self.on_service_changed)
        wrap("list_tasks", self.on_list_tasks)

        # moto has no ExecuteCommand at all: the simulator's is the only one. A function (not a
        # bound method) so that moto's ``getattr(response, name)()`` passes the response.
        def execute_command(response: Any) -> Any:
            return self._exec.execute_command(response)

        setattr(Responses, "execute_command", execute_command)  # noqa: B010


# ------------------------------------------------------------------------- ECS reason texts
def _secret_reason(value_from: str | None) -> str:
    source = "asm" if value_from and ":secretsmanager:" in value_from else "ssm"
    ref = value_from or "(unknown)"
    if source == "asm":
        detail = (
            f"failed to fetch secret {ref} from secrets manager: ResourceNotFoundException: "
            "Secrets Manager can't find the specified secret."
        )
    else:
        detail = f"invalid parameters: {ref}"  # what the agent reports for a missing parameter
    return (
        "ResourceInitializationError: unable to pull secrets or registry auth: execution "
        f"resource retrieval failed: unable to retrieve secret from {source}: service call has "
        f"been retried 1 time(s): {detail}"
    )


def _scaling_reason(deployment_id: str) -> str:
    return f"Scaling activity initiated by (deployment {deployment_id})"


def _dt(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, tz=UTC)
