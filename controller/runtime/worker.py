"""Workers: claim a work unit, reconcile it, and commit the outcome atomically.

Design
------
Every replica runs ``workers`` threads. Each loops: ``claim`` -> heartbeat in the background ->
read status -> :meth:`Reconciler.reconcile` (the key and a :class:`~oab.controller.core.outcome.
RunContext`: run id, attempt, token and the row's decoded ``Origin``) -> :func:`decide` -> one
``TransactWriteItems`` that holds the work unit's completion (conditional on the claim token), the
status transition (conditional on the status's audit sequence) and its audit row: the status and
audit items are built by the :class:`~oab.controller.adapters.statestore.StateStore` and sent in
the queue's own transaction, in that order. So:

- a worker whose claim expired and was taken over writes nothing (the claim-token condition), and
  it stops ECS side effects as soon as its claim is locally in doubt (the ``guard`` it hands to
  reconcile turns false once a heartbeat is lost or the local deadline passes);
- a status change never lands without its audit row, nor an audit row without its change;
- a run that changed nothing (no material status change, no mutating call) writes no status and
  no audit row: it only completes the work unit.

The outcome policy for every result and error is in one function,
:func:`oab.controller.core.outcome.decide` (the controller-runtime ``reconcileHandler`` pattern):
done; requeue after N s (a deployment still progressing); retry with the queue's persisted
full-jitter backoff (retryable errors, throttling); park (terminal errors, until a newer generation
or ``oabctl queue retry``); drop (claim lost: someone else owns the key now).

Containment (no unit can end a worker thread)
---------------------------------------------
- A status item that does not decode parks the unit (``CorruptStatus``) without touching the
  status: the status holds what ECS cannot tell (the audit sequence, the last audited snapshot
  record, the failed content hash, the restart marker), so the worker does not rebuild it. The
  operator repairs or deletes the item, then ``oabctl queue retry``; after a delete the audit
  sequence continues from the run log's newest row (below).
- The commit's failures are told apart. Claim lost or the status written by someone else: the
  run is void, nothing is written (as before). The audit row's put failing on an existing row
  while the status's condition held (the status is behind its run log: deleted, or restored from
  an older backup): the run log's newest sequence is read (one Query, on this path only) and the
  commit is made once more after it, so the sequence never goes down and has no gap. DynamoDB
  refusing the write as invalid (``QueueRejected``: an item over 400 KB, a bad value): a minimal,
  bounded status + audit row parks the unit with ``CommitRejected`` and the reason; if even that
  is refused, the unit is parked with no status write; a retryable failure (throttling, 5xx
  after botocore's retries): the unit backs off (persisted) with ``CommitFailed``, with no status
  write. If that last write fails too, the claim is left to expire (another replica takes it
  over, level-based). Never a loop, never a dead thread.
- Anything else a unit raises (a bug) is caught by the worker loop: logged, counted
  (``oab.loop.errors``), the unit backed off; the thread goes on. A thread that ends anyway is
  the replica's business (:mod:`oab.controller.runtime.replica`: the process exits non-zero).
- Every error text stored (status, audit row, queue row) is scrubbed and bounded
  (:mod:`oab.controller.core.stored`).

Time model: heartbeats and the claim's local deadline use the injected monotonic clock; status
and audit timestamps use the injected wall clock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from oab.controller.adapters.ecs import CallLog
from oab.controller.adapters.statestore import StateStore
from oab.controller.api.service import AgentKey
from oab.controller.base.names import is_agent_key
from oab.controller.core.outcome import (
    CommitFailed,
    CommitRejected,
    CorruptStatus,
    Decision,
    InvalidKey,
    Origin,
    Request,
    Result,
    RunContext,
    decide,
    origin_of,
)
from oab.controller.core.status import (
    OMITTED_CALLS_ACTION,
    AgentStatus,
    AuditRecord,
    AwsCall,
    IllegalTransition,
    iso,
    set_condition,
)
from oab.controller.core.stored import ERROR_BYTES, UnreadableItem, clip, safe_text
from oab.controller.observability.telemetry import instruments
from oab.controller.reconcile.reconciler import Reconciler
from oab.queue.errors import ClaimLost, ExtraConditionFailed, QueueError, QueueRejected
from oab.queue.workqueue import Claim, WorkQueue

log = logging.getLogger("oab.controller.runtime.worker")
tracer = trace.get_tracer("oab.controller.runtime.worker")


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


def _links(origin: Origin) -> list[Link]:
    span_ctx = trace.get_current_span(_parent(origin)).get_span_context()
    return [Link(span_ctx)] if span_ctx.is_valid else []


def _parent(origin: Origin) -> Context:
    """The enqueue span's context stored with the work unit (empty when it has none).

    The reconcile span is its child *and* links to it: one trace per change (apply -> enqueue ->
    every run of that generation, retries and progress polls included), while a backend that
    shows only links still finds the producer.
    """
    return TraceContextTextMapPropagator().extract(carrier=dict(origin.trace), context=Context())


class Worker:
    """One replica's pool of reconcile workers."""

    def __init__(
        self,
        *,
        queue: WorkQueue,
        reconciler: Reconciler,
        state: StateStore,
        replica_id: str,
        config: WorkerConfig | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        on_outcome: Callable[[str, str, Decision], None] | None = None,
    ) -> None:
        self._queue = queue
        self._reconciler = reconciler
        self._state = state
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
        """Claim and process work until ``stop`` is set (then finish the unit in hand).

        No unit ends this loop: a unit whose processing raises (a bug) is logged, counted
        (``oab.loop.errors``) and backed off, and the loop goes on.
        """
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
            try:
                self.process(claim, claimed=(claim_started, time.time_ns()))
            except Exception as exc:
                self._recover(claim, exc)

    def _recover(self, claim: Claim, exc: Exception) -> None:
        """A unit's processing raised past every handler (a bug): back it off, go on."""
        log.exception("processing a work unit failed; backing it off", extra={"key": claim.key})
        instruments.loop_errors.add(1, {"oab.loop": "worker"})
        error = safe_text(f"WorkerError: {type(exc).__name__}: {exc}", ERROR_BYTES)
        try:
            self._queue.fail(claim, error, retryable=True)
        except Exception:  # taken over, or DynamoDB down: the claim expires by itself
            log.warning("backing off failed; the claim will expire", extra={"key": claim.key})

    def process(self, claim: Claim, *, claimed: tuple[int, int] | None = None) -> Decision:
        """Reconcile one claimed work unit and commit its outcome (see "Containment").

        ``claimed`` is the claim's (start, end) in wall-clock nanoseconds, for its span.
        Returns the decision that was committed (a commit failure changes it).
        """
        run = RunContext(
            run_id=self._new_id(),
            attempt=claim.attempt,
            token=claim.token,
            origin=origin_of(claim.reason, claim.trace_context),  # decoded once, here
        )
        every = self._queue.config.visibility_timeout * self.config.heartbeat_fraction
        started = self._monotonic()
        with (
            tracer.start_as_current_span(
                "reconcile",
                context=_parent(run.origin),
                kind=SpanKind.CONSUMER,
                links=_links(run.origin),
                start_time=claimed[0] if claimed else None,
                attributes={
                    "oab.agent.key": claim.key,
                    "oab.generation": claim.generation,
                    "oab.run_id": run.run_id,
                    "oab.idempotency_token": claim.token,
                    "oab.replica_id": self._replica,
                    "oab.epoch": run.origin.epoch,
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
            try:
                decision, elapsed = self._attempt(claim, hb, span, run=run, started=started)
            finally:
                with self._busy_lock:
                    self._inflight.pop(claim.claim_token, None)
        outcome = {"oab.outcome": decision.kind, "oab.reason": decision.reason or decision.kind}
        instruments.reconcile_runs.add(1, outcome)
        instruments.reconcile_duration.record(elapsed, {"oab.outcome": decision.kind})
        if self._on_outcome is not None:
            self._on_outcome(claim.key, run.run_id, decision)
        return decision

    def _attempt(
        self, claim: Claim, hb: _Heartbeat, span: trace.Span, *, run: RunContext, started: float
    ) -> tuple[Decision, float]:
        req = Request(key=AgentKey(claim.key), run=run)
        calls = CallLog()
        result: Result | None = None
        before: AgentStatus | None = None
        if not is_agent_key(claim.key):
            decision = decide(error=InvalidKey(claim.key))
        else:
            try:
                before = self._state.read_status(claim.key)
            except UnreadableItem as exc:
                instruments.poison_items.add(1, {"oab.table": "state", "oab.kind": "status"})
                log.warning("status item unreadable: %s", exc, extra={"key": claim.key})
                span.record_exception(exc)
                decision = decide(error=CorruptStatus(claim.key, exc))
            except Exception as exc:  # throttled, 5xx, or no access: the policy decides
                decision = decide(error=exc)
            else:
                try:
                    result = self._reconciler.reconcile(
                        req, status=before, log=calls, guard=hb.valid
                    )
                    decision = decide(result=result)
                except Exception as exc:
                    decision = decide(error=exc)
                    span.record_exception(exc)
        if result is None:  # the run itself failed (its error, not a recorded failure)
            span.set_status(Status(StatusCode.ERROR, decision.error or decision.reason))
        elapsed = self._monotonic() - started
        decision = self._commit(
            hb,
            before=before,
            result=result,
            decision=decision,
            calls=calls,
            req=req,
            duration_ms=int(elapsed * 1000),
            span=span,
        )
        span.set_attribute("oab.outcome", decision.kind)
        if decision.reason:
            span.set_attribute("oab.reason", decision.reason)
        return decision, elapsed

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
            attempts=req.run.attempt,
            last_run_id=req.run.run_id,
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

    def _audit(
        self,
        claim: Claim,
        *,
        before: AgentStatus,
        after: AgentStatus,
        result: Result | None,
        decision: Decision,
        calls: Sequence[AwsCall],
        req: Request,
        duration_ms: int,
        span: trace.Span,
    ) -> AuditRecord:
        ctx = span.get_span_context()
        return AuditRecord(
            key=claim.key,
            seq=after.audit_seq,
            run_id=req.run.run_id,
            # The generation actually reconciled (a newer one may have arrived after the claim
            # was taken; the manifest read decides), else the claimed one.
            generation=(result.status.observed_generation if result else 0) or claim.generation,
            token=claim.token,
            replica=self._replica,
            epoch=req.run.origin.epoch,
            trace_id=format(ctx.trace_id, "032x"),
            span_id=format(ctx.span_id, "016x"),
            from_phase=before.phase,
            to_phase=after.phase,
            calls=tuple(calls),
            outcome=decision.kind,
            error=decision.error,
            duration_ms=duration_ms,
            at=self._wall(),
        )

    def _commit(
        self,
        hb: _Heartbeat,
        *,
        before: AgentStatus | None,
        result: Result | None,
        decision: Decision,
        calls: CallLog,
        req: Request,
        duration_ms: int,
        span: trace.Span,
    ) -> Decision:
        """Write the outcome (see "Containment"); returns the decision actually committed."""
        claim = hb.current()
        if decision.kind == "drop":
            log.warning("claim lost; writing nothing", extra={"key": claim.key})
            return decision
        if before is None:  # the status could not be read: the queue row alone
            return self._write_bare(claim, decision, span)
        made = calls.snapshot()
        after = self._status_after(before, result, decision, req, made)
        items: list[dict[str, Any]] = []
        audit: AuditRecord | None = None
        if after.material() != before.material() or made:
            after = replace(after, audit_seq=before.audit_seq + 1)
            audit = self._audit(
                claim,
                before=before,
                after=after,
                result=result,
                decision=decision,
                calls=made,
                req=req,
                duration_ms=duration_ms,
                span=span,
            )
            after = replace(after, trace_id=audit.trace_id)
            try:
                items = self._items(before, after, audit)
            except IllegalTransition as exc:
                span.record_exception(exc)
                decision = decide(error=exc)
                items = []
                audit = None
            span.add_event(
                "status.transition",
                {
                    "oab.from_phase": before.phase or "",
                    "oab.to_phase": after.phase or "",
                    "oab.audit_seq": after.audit_seq,
                },
            )
        try:
            self._outcome(claim, decision, items)
            return decision
        except ExtraConditionFailed as exc:
            if exc.index == 1 and audit is not None:
                # The status's condition held but its audit row exists: the run log is ahead.
                return self._resume(
                    claim, before=before, after=after, audit=audit, decision=decision, span=span
                )
            return self._void(claim, exc, span)
        except ClaimLost as exc:
            return self._void(claim, exc, span)
        except QueueRejected as exc:
            return self._park_rejected(
                claim,
                before=before,
                decision=decision,
                made=made,
                req=req,
                duration_ms=duration_ms,
                exc=exc,
                span=span,
            )
        except Exception as exc:
            return self._back_off(claim, exc, span)

    def _items(
        self, before: AgentStatus, after: AgentStatus, audit: AuditRecord, log_seq: int = 0
    ) -> list[dict[str, Any]]:
        return self._state.transition_items(
            before=before, after=after, audit=audit, log_seq=log_seq or None
        )

    def _outcome(self, claim: Claim, decision: Decision, items: Sequence[dict[str, Any]]) -> None:
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

    def _void(self, claim: Claim, exc: Exception, span: trace.Span) -> Decision:
        # Someone else owns the key now (or wrote its status): our run is void.
        span.record_exception(exc)
        log.warning("outcome rejected: %s", exc, extra={"key": claim.key})
        return decide(error=exc)

    def _resume(
        self,
        claim: Claim,
        *,
        before: AgentStatus,
        after: AgentStatus,
        audit: AuditRecord,
        decision: Decision,
        span: trace.Span,
    ) -> Decision:
        """Commit once more after the run log's newest row (see "Containment")."""
        try:
            newest = self._state.newest_audit_seq(claim.key)
            if newest <= before.audit_seq:
                raise ExtraConditionFailed(1, "ConditionalCheckFailed")  # a racing writer
            seq = newest + 1
            log.warning(
                "status audit sequence %d is behind the run log's %d: continuing after it",
                before.audit_seq,
                newest,
                extra={"key": claim.key},
            )
            span.add_event("audit.resumed", {"oab.audit_seq": seq})
            items = self._items(
                before, replace(after, audit_seq=seq), replace(audit, seq=seq), newest
            )
            self._outcome(claim, decision, items)
            return decision
        except (ClaimLost, ExtraConditionFailed) as exc:
            return self._void(claim, exc, span)
        except Exception as exc:
            return self._back_off(claim, exc, span)

    def _write_bare(self, claim: Claim, decision: Decision, span: trace.Span) -> Decision:
        """The outcome without a status write (the status could not be read)."""
        try:
            self._outcome(claim, decision, ())
            return decision
        except ClaimLost as exc:
            return self._void(claim, exc, span)
        except Exception as exc:
            return self._back_off(claim, exc, span)

    def _park_rejected(
        self,
        claim: Claim,
        *,
        before: AgentStatus,
        decision: Decision,
        made: Sequence[AwsCall],
        req: Request,
        duration_ms: int,
        exc: QueueRejected,
        span: trace.Span,
    ) -> Decision:
        """DynamoDB refused the commit as invalid: park with a minimal, bounded status + audit
        row; failing that, park the row alone; failing that, leave the claim to expire."""
        span.record_exception(exc)
        instruments.poison_items.add(1, {"oab.table": "state", "oab.kind": "commit"})
        log.error("commit refused by DynamoDB; parking: %s", exc, extra={"key": claim.key})
        parked = decide(error=CommitRejected(kind=decision.kind, cause=exc))
        try:
            after = self._status_after(before, None, parked, req, made)
            after = replace(after, audit_seq=before.audit_seq + 1)
            audit = self._audit(
                claim,
                before=before,
                after=after,
                result=None,
                decision=parked,
                calls=_minimal(made),
                req=req,
                duration_ms=duration_ms,
                span=span,
            )
            items = self._items(before, replace(after, trace_id=audit.trace_id), audit)
            self._outcome(claim, parked, items)
            return parked
        except ClaimLost as lost:
            return self._void(claim, lost, span)
        except Exception:
            log.warning("minimal commit failed too; parking the row alone", exc_info=True)
        try:
            self._outcome(claim, parked, ())
        except Exception:
            log.warning("parking failed; the claim will expire", extra={"key": claim.key})
        return parked

    def _back_off(self, claim: Claim, exc: Exception, span: trace.Span) -> Decision:
        """A commit that may succeed later failed (throttling, 5xx after botocore's retries):
        back the unit off with no status write; failing that, leave the claim to expire."""
        span.record_exception(exc)
        code = exc.code if isinstance(exc, QueueError) and exc.code else type(exc).__name__
        log.warning("commit failed (%s); backing off", code, extra={"key": claim.key})
        failed = decide(error=CommitFailed(code=code, cause=exc))
        try:
            self._queue.fail(claim, failed.error, retryable=True)
        except Exception:
            log.warning("backing off failed; the claim will expire", extra={"key": claim.key})
        return failed


#: Calls a minimal audit row keeps, and the bytes each of their fields keeps.
_MINIMAL_CALLS = 32
_MINIMAL_FIELD_BYTES = 256


def _minimal(calls: Sequence[AwsCall]) -> tuple[AwsCall, ...]:
    """The calls of a run whose full commit was refused, cut hard (the row only has to land)."""
    kept = [
        AwsCall(
            action=c.action,
            target=clip(c.target, _MINIMAL_FIELD_BYTES),
            result=clip(c.result, _MINIMAL_FIELD_BYTES),
            request_id=clip(c.request_id, _MINIMAL_FIELD_BYTES),
            adopted=c.adopted,
        )
        for c in calls[:_MINIMAL_CALLS]
    ]
    if len(calls) > _MINIMAL_CALLS:
        kept.append(
            AwsCall(
                action=OMITTED_CALLS_ACTION,
                target="",
                result=f"{len(calls) - _MINIMAL_CALLS} more call(s) left out",
            )
        )
    return tuple(kept)
