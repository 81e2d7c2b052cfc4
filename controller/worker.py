"""Workers: claim a work unit, reconcile it, and commit the outcome atomically.

Design
------
Every replica runs ``workers`` threads. Each loops: ``claim`` -> heartbeat in the background ->
read status -> :meth:`Reconciler.reconcile` -> :func:`decide` -> one ``TransactWriteItems`` that
holds the work unit's completion (conditional on the claim token), the status transition
(conditional on the status's audit sequence) and its audit row. So:

- a worker whose claim expired and was taken over writes nothing (the claim-token condition), and
  it stops ECS side effects as soon as its claim is locally in doubt (the ``guard`` it hands to
  reconcile turns false once a heartbeat is lost or the local deadline passes);
- a status change never lands without its audit row, nor an audit row without its change;
- a run that changed nothing (no material status change, no mutating call) writes no status and
  no audit row: it only completes the work unit.

The outcome policy for every result and error is in one function, :func:`decide` (the
controller-runtime ``reconcileHandler`` pattern): done; requeue after N s (a deployment still
progressing); retry with the queue's persisted full-jitter backoff (retryable errors, throttling);
park (terminal errors, until a newer generation or ``oabctl queue retry``); drop (claim lost:
someone else owns the key now).

Time model: heartbeats and the claim's local deadline use the injected monotonic clock; status
and audit timestamps use the injected wall clock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from oab.controller.api import AgentKey
from oab.controller.ecs import CallLog
from oab.controller.errors import LostClaim, OabError
from oab.controller.reconcile import Reconciler, Request, Result
from oab.controller.status import (
    AgentStatus,
    AuditRecord,
    AwsCall,
    IllegalTransition,
    iso,
    read_status,
    set_condition,
    transition_items,
)
from oab.controller.tables import TableNames
from oab.controller.telemetry import instruments
from oab.queue.errors import ClaimLost, ExtraConditionFailed
from oab.queue.workqueue import Claim, WorkQueue

log = logging.getLogger("oab.controller.worker")
tracer = trace.get_tracer("oab.controller.worker")

Kind = Literal["done", "requeue", "retry", "park", "drop"]


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do with a work unit after a run."""

    kind: Kind
    requeue_after: float | None = None
    error: str = ""
    reason: str = ""


def decide(*, result: Result | None = None, error: BaseException | None = None) -> Decision:
    """The one outcome policy: a run's result or error -> queue action."""
    if error is not None:
        if isinstance(error, LostClaim | ClaimLost):
            return Decision(kind="drop", error=str(error), reason="ClaimLost")
        if isinstance(error, IllegalTransition):
            return Decision(kind="park", error=str(error), reason="IllegalTransition")
        if isinstance(error, OabError):
            kind: Kind = "retry" if error.retryable else "park"
            return Decision(kind=kind, error=str(error), reason=error.reason)
        # Unknown exceptions are bugs or unclassified infrastructure failures: retry with backoff
        # (bounded by the queue's cap) rather than park a healthy agent forever.
        return Decision(kind="retry", error=f"{type(error).__name__}: {error}", reason="Error")
    assert result is not None
    if result.requeue_after is not None:
        return Decision(kind="requeue", requeue_after=result.requeue_after)
    return Decision(kind="done", error=result.failure)


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """Worker pool settings.

    - ``workers`` (default 4): reconcile threads per replica. More overlap ECS latency; the AWS
      rate limits are shared, so more threads beyond that only queue on the token buckets.
    - ``idle_poll_s`` (default 0.5): period of claim polls while the queue is empty, shared by
      the replica's workers (jittered +-50 %). Lower starts work sooner after an enqueue and
      costs more index queries while idle (one Query per shard per poll).
    - ``heartbeat_fraction`` (default 1/3): heartbeat every this fraction of the visibility
      timeout, so two heartbeats can fail before the claim expires.
    """

    workers: int = 4
    idle_poll_s: float = 0.5
    heartbeat_fraction: float = 1 / 3

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.idle_poll_s <= 0:
            raise ValueError("idle_poll_s must be > 0")
        if not 0 < self.heartbeat_fraction < 1:
            raise ValueError("heartbeat_fraction must be in (0, 1)")


class _Heartbeat:
    """Keeps one claim alive in the background; ``valid()`` is the reconcile guard."""

    def __init__(self, queue: WorkQueue, claim: Claim, *, every: float, monotonic: Any) -> None:
        self._queue = queue
        self.claim = claim
        self._every = every
        self._monotonic = monotonic
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"hb-{claim.key}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def valid(self) -> bool:
        with self._lock:
            claim = self.claim
        return not self._lost.is_set() and not claim.expired(self._monotonic())

    def current(self) -> Claim:
        with self._lock:
            return self.claim

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                renewed = self._queue.heartbeat(self.current())
            except ClaimLost:
                self._lost.set()
                return
            except Exception:  # a failed heartbeat is retried; the local deadline still holds
                log.warning("heartbeat failed", exc_info=True, extra={"key": self.claim.key})
                continue
            with self._lock:
                self.claim = renewed


def _epoch_of(claim: Claim) -> int:
    ctx = claim.trace_context or {}
    try:
        return int(ctx.get("epoch", "0"))
    except ValueError:
        return 0


def _links(claim: Claim) -> list[Link]:
    span_ctx = trace.get_current_span(_parent(claim)).get_span_context()
    return [Link(span_ctx)] if span_ctx.is_valid else []


def _parent(claim: Claim) -> Context:
    """The enqueue span's context stored with the work unit (empty when it has none).

    The reconcile span is its child *and* links to it: one trace per change (apply -> enqueue ->
    every run of that generation, retries and progress polls included), while a backend that
    shows only links still finds the producer.
    """
    carrier: Mapping[str, str] = claim.trace_context or {}
    return TraceContextTextMapPropagator().extract(carrier=dict(carrier), context=Context())


class Worker:
    """One replica's pool of reconcile workers."""

    def __init__(
        self,
        *,
        queue: WorkQueue,
        reconciler: Reconciler,
        dynamodb: Any,
        tables: TableNames,
        replica_id: str,
        config: WorkerConfig | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        on_outcome: Callable[[str, str, Decision], None] | None = None,
    ) -> None:
        self._queue = queue
        self._reconciler = reconciler
        self._ddb = dynamodb
        self._tables = tables
        self._replica = replica_id
        self.config = config or WorkerConfig()
        self._monotonic = monotonic
        self._wall = wall
        self._new_id = new_id
        self._on_outcome = on_outcome
        self._busy_lock = threading.Lock()  # guards _inflight
        self._inflight: dict[str, _Heartbeat] = {}
        self._poll_lock = threading.Lock()
        self._next_poll = 0.0

    @property
    def busy(self) -> int:
        """Work units in flight on this replica."""
        with self._busy_lock:
            return len(self._inflight)

    def release_inflight(self) -> int:
        """Give back every claim still in flight (shutdown past its budget); returns the count.

        The threads holding them may still be running: their final write then fails its
        claim-token condition and writes nothing.
        """
        with self._busy_lock:
            held = list(self._inflight.values())
        released = 0
        for hb in held:
            try:
                self._queue.release(hb.current())
                released += 1
            except Exception:  # already completed, or taken over: nothing to give back
                log.info("release skipped", extra={"key": hb.claim.key})
        return released

    def run(self, stop: threading.Event) -> None:
        """Claim and process work until ``stop`` is set (then finish the unit in hand)."""
        rng = random.Random()
        worker_id = f"{self._replica}/{threading.current_thread().name}"
        while not stop.is_set():
            # While the queue is empty, one poll per replica per idle period (not one per
            # worker): idle workers share a gate. A successful claim opens it for everyone, as
            # more work is likely waiting.
            with self._poll_lock:
                wait = self._next_poll - self._monotonic()
                if wait <= 0:
                    self._next_poll = self._monotonic() + self.config.idle_poll_s * rng.uniform(
                        0.5, 1.5
                    )
            if wait > 0:
                stop.wait(min(wait, self.config.idle_poll_s * 1.5))
                continue
            # Span timestamps only (the claim span is emitted once we know there is one).
            claim_started = time.time_ns()
            try:
                claim = self._queue.claim(worker_id)
            except Exception:
                log.warning("claim failed", exc_info=True)
                claim = None
            if claim is None:
                continue
            with self._poll_lock:
                self._next_poll = self._monotonic()
            self.process(claim, claimed=(claim_started, time.time_ns()))

    def process(self, claim: Claim, *, claimed: tuple[int, int] | None = None) -> Decision:
        """Reconcile one claimed work unit and commit its outcome.

        ``claimed`` is the claim's (start, end) in wall-clock nanoseconds, for its span.
        """
        run_id = self._new_id()
        every = self._queue.config.visibility_timeout * self.config.heartbeat_fraction
        started = self._monotonic()
        with (
            tracer.start_as_current_span(
                "reconcile",
                context=_parent(claim),
                kind=SpanKind.CONSUMER,
                links=_links(claim),
                start_time=claimed[0] if claimed else None,
                attributes={
                    "oab.agent.key": claim.key,
                    "oab.generation": claim.generation,
                    "oab.run_id": run_id,
                    "oab.idempotency_token": claim.token,
                    "oab.replica_id": self._replica,
                    "oab.epoch": _epoch_of(claim),
                    "oab.attempt": claim.attempt,
                    "messaging.system": "aws_dynamodb",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": "oab-queue",
                },
            ) as span,
            _Heartbeat(self._queue, claim, every=every, monotonic=self._monotonic) as hb,
        ):
            claim_span = tracer.start_span(
                "claim",
                kind=SpanKind.CLIENT,
                start_time=claimed[0] if claimed else None,
                attributes={
                    "messaging.system": "aws_dynamodb",
                    "messaging.operation.type": "receive",
                    "messaging.destination.name": "oab-queue",
                    "oab.agent.key": claim.key,
                    "oab.attempt": claim.attempt,
                    "oab.claim.owner": claim.owner,
                },
            )
            claim_span.end(end_time=claimed[1] if claimed else None)
            with self._busy_lock:
                self._inflight[claim.claim_token] = hb
            req = Request(
                key=AgentKey(claim.key),
                generation=claim.generation,
                token=claim.token,
                reason=claim.reason,
                attempt=claim.attempt,
                run_id=run_id,
            )
            calls = CallLog()
            before = read_status(self._ddb, self._tables.state, claim.key)
            result: Result | None = None
            try:
                result = self._reconciler.reconcile(req, status=before, log=calls, guard=hb.valid)
                decision = decide(result=result)
            except Exception as exc:
                decision = decide(error=exc)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, decision.error))
            span.set_attribute("oab.outcome", decision.kind)
            if decision.reason:
                span.set_attribute("oab.reason", decision.reason)
            elapsed = self._monotonic() - started
            duration_ms = int(elapsed * 1000)
            self._commit(
                hb,
                before=before,
                result=result,
                decision=decision,
                calls=calls,
                req=req,
                duration_ms=duration_ms,
                span=span,
            )
            with self._busy_lock:
                self._inflight.pop(claim.claim_token, None)
        outcome = {"oab.outcome": decision.kind, "oab.reason": decision.reason or decision.kind}
        instruments.reconcile_runs.add(1, outcome)
        instruments.reconcile_duration.record(elapsed, {"oab.outcome": decision.kind})
        if self._on_outcome is not None:
            self._on_outcome(claim.key, run_id, decision)
        return decision

    def _status_after(
        self,
        before: AgentStatus,
        result: Result | None,
        decision: Decision,
        req: Request,
        made: Sequence[AwsCall],
    ) -> AgentStatus:
        if result is not None:
            return result.status
        now = iso(self._wall())
        # A failed run that created (or adopted) the service still says so, so that the next
        # run does not record it again as adopted.
        created = [c.result for c in made if c.action == "ecs:CreateService" and c.result]
        after = replace(
            before,
            last_error=decision.error,
            attempts=req.attempt,
            last_run_id=req.run_id,
            last_reconciled=now,
            service_arn=before.service_arn or (created[-1] if created else ""),
        )
        if decision.kind == "park" and before.phase != "Terminating":
            conds = set_condition(
                before.conditions,
                type="Degraded",
                status="True",
                reason=decision.reason,
                message=decision.error,
                now=now,
            )
            return replace(after, phase="Failed", conditions=conds)
        if before.phase is None:
            return replace(after, phase="Pending")
        return after

    def _commit(
        self,
        hb: _Heartbeat,
        *,
        before: AgentStatus,
        result: Result | None,
        decision: Decision,
        calls: CallLog,
        req: Request,
        duration_ms: int,
        span: trace.Span,
    ) -> None:
        claim = hb.current()
        if decision.kind == "drop":
            log.warning("claim lost; writing nothing", extra={"key": claim.key})
            return
        made = calls.snapshot()
        after = self._status_after(before, result, decision, req, made)
        items: list[dict[str, Any]] = []
        if after.material() != before.material() or made:
            after = replace(after, audit_seq=before.audit_seq + 1)
            ctx = span.get_span_context()
            audit = AuditRecord(
                key=claim.key,
                seq=after.audit_seq,
                run_id=req.run_id,
                # The generation actually reconciled (a newer one may have arrived after the
                # claim was taken; the manifest read decides), else the claimed one.
                generation=(result.status.observed_generation if result else 0) or claim.generation,
                token=claim.token,
                replica=self._replica,
                epoch=_epoch_of(claim),
                trace_id=format(ctx.trace_id, "032x"),
                span_id=format(ctx.span_id, "016x"),
                from_phase=before.phase,
                to_phase=after.phase,
                calls=made,
                outcome=decision.kind,
                error=decision.error,
                duration_ms=duration_ms,
                at=self._wall(),
            )
            after = replace(after, trace_id=audit.trace_id)
            try:
                items = transition_items(
                    state_table=self._tables.state,
                    runlog_table=self._tables.runlog,
                    before=before,
                    after=after,
                    audit=audit,
                )
            except IllegalTransition as exc:
                span.record_exception(exc)
                decision = Decision(kind="park", error=str(exc), reason="IllegalTransition")
                items = []
            span.add_event(
                "status.transition",
                {
                    "oab.from_phase": before.phase or "",
                    "oab.to_phase": after.phase or "",
                    "oab.audit_seq": after.audit_seq,
                },
            )
        try:
            if decision.kind == "done":
                self._queue.complete(claim, extra_items=items)
            elif decision.kind == "requeue":
                self._queue.complete(claim, extra_items=items, requeue_after=decision.requeue_after)
            else:
                self._queue.fail(
                    claim,
                    decision.error or decision.reason,
                    retryable=decision.kind == "retry",
                    extra_items=items,
                )
        except (ClaimLost, ExtraConditionFailed) as exc:
            # Someone else owns the key now (or wrote its status): our run is void.
            span.record_exception(exc)
            log.warning("outcome rejected: %s", exc, extra={"key": claim.key})
