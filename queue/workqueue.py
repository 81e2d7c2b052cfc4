"""A stingy, crash-safe work queue kept in one DynamoDB table: one row per agent key.

Semantics (the contract, in the manner of client-go's ``workqueue/doc.go``):

- **One row per key** (``{ns}/{name}``). A key is never processed by two live claims at once.
- **Stingy adds.** ``enqueue`` while the row waits merges into it (``coalesced``); while it is in
  flight it marks the row dirty (``dirtied``) and the key runs once more after ``complete``. The
  newest generation wins; an older generation never regresses the row (``superseded``).
- **Idempotent adds.** The token (``idempotency_token(key, generation, spec_digest, reason)``)
  is stored on the row; the same token again writes nothing (``duplicate``).
- **Fenced adds.** The caller's ``extra_condition`` (the leader's fence) commits in the same
  transaction as the row; when it fails nothing is written and ``ExtraConditionFailed`` says so.
- **Claims.** ``claim`` finds due rows through the sparse, sharded ``ready-index`` and then takes
  one with a conditional write on the base table (the index is only a hint): owner, fresh claim
  token, deadline ``now + visibility_timeout``, ``attempts + 1``. The claim carries the newest
  generation, its token, reason and trace context.
- **Crash recovery.** An in-flight row keeps ``ready_at = claim deadline`` in the index, so a claim
  whose deadline passed is claimable again by the same query (counted as a claim expiry) once
  this queue has also seen the row unchanged for a whole ``visibility_timeout`` on its own
  monotonic clock (a host whose wall clock runs ahead cannot take a live claim over).
- **Claim-conditional outcomes.** ``heartbeat``, ``complete``, ``fail`` and ``release`` succeed
  only while the caller's claim token is the row's; a taken-over worker gets ``ClaimLost`` (counted)
  and writes nothing. ``extra_items`` commit atomically with the outcome in one transaction.
- **Outcomes.** ``complete``: done, or ready again after ``requeue_after`` seconds (not a failure),
  or ready at once if dirtied meanwhile. ``fail(retryable=True)``: ready after a full-jitter backoff
  ``uniform(0, min(cap, base * 2**(attempts-1)))`` persisted on the row (it survives restarts and
  failover). ``fail(retryable=False)``: parked (visible) until a newer generation or ``retry``.
  ``release``: ready at once, the attempt not counted. A dirty row is always ready at once.
- **Unreadable rows are quarantined, never fatal.** A stored row that does not decode (wrong
  types, missing or out-of-range attributes) is rewritten, conditionally on the raw ``version``
  and ``write_id`` that were read, as a *parked* row with ``last_error = "CorruptRow: ..."``,
  by whichever operation meets it first (a claim, an enqueue, the leader's sweep, an operator's
  retry), and counted (``oab.poison.items``). Parked, not ready: a row that cannot be read may
  have been in flight. A newer generation or ``retry`` revives it as usual; a worker whose claim
  row became unreadable is told its claim is lost. A shard whose index query fails does not
  stop claims from the other shards.
- **No ordering across keys.** Claims prefer older rows within a shard but shards are visited from
  a random start and candidates in a random order, to keep workers from colliding.

Time model: stored times (``ready_at``, claim deadlines) are wall-clock epoch seconds with
millisecond precision, compared by whichever host claims; take-over therefore assumes host clocks
agree to well within ``visibility_timeout``. Each :class:`Claim` also carries a local monotonic
deadline (taken *before* the claim request was sent, so it errs early): a worker stops side
effects once it passes. Safety never rests on clocks: the claim-token condition rejects a stale
worker's writes whatever the clocks say.

Implementation: every operation is a pure transition of :mod:`oab.queue.row` applied to the row
and written with compare-and-swap on its ``version`` (:mod:`oab.queue.store`). A failed condition
returns the winning row, the transition is re-applied to it, at most ``max_conflict_retries``
times. A write that succeeded but whose response was lost (then retried by botocore and failed
its condition) is recognised by its ``write_id`` on the returned row: ambiguous-write read-back
at no extra request.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from oab.queue import row as rows
from oab.queue.config import Clock, QueueConfig, SystemClock
from oab.queue.errors import (
    ClaimLost,
    Contention,
    CorruptRow,
    ExtraConditionFailed,
    KeyNotFound,
    QueueError,
    QueueUnavailable,
)
from oab.queue.metrics import QueueMetrics
from oab.queue.row import (
    AgentKey,
    ClaimToken,
    EnqueueOutcome,
    IdempotencyToken,
    Row,
    State,
    UnreadableRow,
    WorkerId,
)
from oab.queue.store import DynamoStore, QueueStore, RowConflict, TransactItem

__all__ = [
    "Claim",
    "ClaimLost",
    "EnqueueOutcome",
    "EnqueueResult",
    "ExtraConditionFailed",
    "WorkQueue",
    "idempotency_token",
]

log = logging.getLogger("oab.queue")

T = TypeVar("T")
TraceContext = str | Mapping[str, str]
_UNREAD = object()


def idempotency_token(key: str, generation: int, spec_digest: str, reason: str) -> IdempotencyToken:
    """Deterministic 32-hex-digit token of one enqueue request."""
    material = "\x1f".join((key, str(generation), spec_digest, reason)).encode()
    return IdempotencyToken(hashlib.sha256(material).hexdigest()[:32])


@dataclass(frozen=True, kw_only=True)
class EnqueueResult:
    """Outcome of :meth:`WorkQueue.enqueue`; ``token`` is the caller's token, ``row`` the row as
    stored after the call (``None`` only if it never existed)."""

    outcome: EnqueueOutcome
    token: IdempotencyToken
    row: Row | None


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A worker's hold on one work unit."""

    key: AgentKey
    generation: int
    token: IdempotencyToken
    reason: str
    attempt: int
    trace_context: Mapping[str, str] | None
    owner: WorkerId
    claim_token: ClaimToken
    #: Stored wall-clock deadline: other hosts may take the row over after it.
    deadline: float
    #: Local monotonic deadline (from before the claim request): stop side effects after it.
    local_deadline: float
    #: Local monotonic time the claim was requested (for work duration).
    claimed_at: float
    #: Row version written by this claim: increases with every write, a per-key fencing number.
    sequence: int
    #: Claim token this claim took over from an expired claim, if any.
    took_over: ClaimToken | None = None
    #: The row as this claim (or its last heartbeat) wrote it: the compare-and-swap starting
    #: point of the claimer's next write, so an outcome costs one request when nothing changed.
    row: Row | None = field(default=None, repr=False, compare=False)

    def expired(self, monotonic_now: float) -> bool:
        """True once the local deadline has passed: the worker must stop acting on the claim."""
        return monotonic_now >= self.local_deadline


def _trace(value: TraceContext | None) -> Mapping[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"traceparent": value}
    return dict(value)


class WorkQueue:
    """The work queue over one DynamoDB table (see the module docstring for the semantics)."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        config: QueueConfig | None = None,
        clock: Clock | None = None,
        new_id: Callable[[], str] | None = None,
        rng: random.Random | None = None,
        metrics: QueueMetrics | None = None,
        store: QueueStore | None = None,
    ) -> None:
        """``client`` is a low-level boto3 DynamoDB client; ``store`` replaces the DynamoDB
        adapter (then ``client`` and ``table`` are unused, e.g. ``MemoryStore`` in tests)."""
        self.config = config or QueueConfig()
        self._store: QueueStore = store or DynamoStore(client, table, shards=self.config.shards)
        self._clock: Clock = clock or SystemClock()
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self._rng = rng or random.Random()
        self.metrics = metrics or QueueMetrics()
        self._hints: list[AgentKey] = []
        self._hints_lock = threading.Lock()
        # In-flight rows past their stored deadline: key -> (version, first seen, monotonic).
        self._observed: dict[AgentKey, tuple[int, float]] = {}
        self._observed_lock = threading.Lock()
        # Unreadable rows this queue could not replace yet, by key -> problem: counted once, not
        # at every claim poll that meets them again.
        self._unreplaced: dict[AgentKey, str] = {}

    def _now(self) -> float:
        # Stored times have millisecond precision; flooring "now" to it means a row made ready
        # "now" is due at once instead of after a rounded-up half millisecond.
        return math.floor(self._clock.time() * 1000.0) / 1000.0

    # -- the compare-and-swap loop -------------------------------------------------------------

    def _mutate(
        self,
        key: AgentKey,
        transition: Callable[[Row | None, float], tuple[T, Row | None]],
        *,
        seen: Row | object | None = _UNREAD,
        extra_items: Sequence[TransactItem] = (),
    ) -> tuple[T, Row | None]:
        """Apply ``transition(row, now)`` until its result is written (or nothing is to be
        written). Returns the transition's value and the row as stored afterwards."""
        current = self._store.get(key) if seen is _UNREAD else seen
        assert current is None or isinstance(current, Row)
        for _ in range(self.config.max_conflict_retries):
            now = self._now()
            value, new = transition(current, now)
            if new is None:
                return value, current
            new = replace(
                new,
                version=(current.version + 1) if current else 1,
                write_id=self._new_id(),
                updated_at=now,
            )
            try:
                self._store.write(
                    new,
                    expected_version=current.version if current else None,
                    extra_items=extra_items,
                )
                return value, new
            except RowConflict as conflict:
                if conflict.current is not None and conflict.current.write_id == new.write_id:
                    # Our write landed; its response was lost and the retry hit our own row.
                    return value, conflict.current
                if conflict.extra_failed is not None:
                    raise conflict.extra_failed from conflict
                current = conflict.current
        raise Contention(f"{key} changed {self.config.max_conflict_retries} times in a row")

    # -- producers -----------------------------------------------------------------------------

    def enqueue(
        self,
        key: str,
        generation: int,
        reason: str,
        token: IdempotencyToken | str,
        *,
        extra_condition: TransactItem | None = None,
        trace_context: TraceContext | None = None,
    ) -> EnqueueResult:
        """Ask for ``key`` to be reconciled at ``generation`` (see the semantics list).

        ``extra_condition`` is one TransactWriteItems item (e.g. ``{"ConditionCheck": ...}``)
        that must hold for the row to be written; it raises ``ExtraConditionFailed(0, ...)``
        otherwise. Requests that write nothing (duplicate, superseded, parked) do not check it.
        """
        agent, tok, trace = AgentKey(key), IdempotencyToken(token), _trace(trace_context)

        def transition(row: Row | None, now: float) -> tuple[EnqueueOutcome, Row | None]:
            return rows.enqueue(
                row,
                key=agent,
                generation=generation,
                token=tok,
                reason=reason,
                trace_context=trace,
                now=now - self.config.clock_skew_allowance,
            )

        extra = (extra_condition,) if extra_condition else ()
        # Optimistic first write for a new key (no read): a conflict hands us the row anyway.
        try:
            outcome, stored = self._mutate(agent, transition, seen=None, extra_items=extra)
        except CorruptRow as exc:
            # Quarantine the unreadable row (with the caller's condition: the leader's fence),
            # then apply this request to the parked row as to any other.
            parked = self._quarantine(exc.row, extra_items=extra)
            if parked is None:
                raise
            outcome, stored = self._mutate(agent, transition, seen=parked, extra_items=extra)
        self.metrics.adds.add(1, {"outcome": outcome.value})
        if outcome in (EnqueueOutcome.COALESCED, EnqueueOutcome.DIRTIED):
            self.metrics.coalesced.add(1, {"outcome": outcome.value})
        return EnqueueResult(outcome=outcome, token=tok, row=stored)

    # -- consumers -----------------------------------------------------------------------------

    def claim(self, worker_id: str) -> Claim | None:
        """Claim one due row for ``worker_id``, or ``None`` if no row is due.

        Index entries left over from this queue's previous query are tried first (each is
        re-checked on the base table, so a stale hint costs one read, never a wrong claim);
        only when they run out are the shards queried, from a random start.
        """
        owner = WorkerId(worker_id)
        while (hint := self._pop_hint()) is not None:
            got = self._try_claim(hint, owner)
            if got is not None:
                return got
        start = self._rng.randrange(self.config.shards)
        failures: list[QueueError] = []
        for i in range(self.config.shards):
            shard = (start + i) % self.config.shards
            try:
                keys = self._store.ready_keys(shard, now=self._now(), limit=self.config.claim_scan)
            except QueueError as exc:
                # One shard's index failing (a throttled partition, an entry the index cannot
                # serve) must not keep the workers from the other shards' work.
                failures.append(exc)
                continue
            self._rng.shuffle(keys)
            for n, key in enumerate(keys):
                got = self._try_claim(key, owner)
                if got is not None:
                    with self._hints_lock:
                        self._hints = keys[n + 1 :]
                    return got
        if len(failures) == self.config.shards:
            raise failures[0]  # nothing was answered: the caller backs off as before
        return None

    def _pop_hint(self) -> AgentKey | None:
        with self._hints_lock:
            return self._hints.pop() if self._hints else None

    def _stale_for_long_enough(self, row: Row, mono: float) -> bool:
        """Whether this queue has seen ``row`` unchanged for a whole visibility timeout.

        The stored claim deadline is a wall-clock time written by another host; comparing it
        with this host's wall clock alone would let a host whose clock runs ahead take live
        claims over while their workers still act on ECS. So, as the lease does, a take-over
        also needs the row (its version: every heartbeat bumps it) to stay unchanged for a full
        visibility timeout on this host's monotonic clock.
        """
        with self._observed_lock:
            seen = self._observed.get(row.key)
            if seen is None or seen[0] != row.version:
                self._observed[row.key] = (row.version, mono)
                if len(self._observed) > 4096:
                    horizon = mono - 4 * self.config.visibility_timeout
                    self._observed = {k: v for k, v in self._observed.items() if v[1] > horizon}
                return False
            return mono - seen[1] >= self.config.visibility_timeout

    def _try_claim(self, key: AgentKey, owner: WorkerId) -> Claim | None:
        try:
            current = self._store.get(key)
        except CorruptRow as exc:
            self._quarantine(exc.row)
            return None  # parked now (or left for the sweep): try the next candidate
        if current is None:
            return None
        mono = self._clock.monotonic()
        if (
            self.config.observe_takeover
            and current.state is State.IN_FLIGHT
            and current.claimable(self._clock.time())
            and not self._stale_for_long_enough(current, mono)
        ):
            return None
        observed_version = current.version
        claim_token = ClaimToken(self._new_id())

        def transition(row: Row | None, now: float) -> tuple[Row | None, Row | None]:
            if row is None:
                return None, None
            if (
                self.config.observe_takeover
                and row.state is State.IN_FLIGHT
                and row.version != observed_version
            ):
                return row, None  # a claim that changed since it was judged stale: leave it
            new = rows.claim(
                row,
                owner=owner,
                claim_token=claim_token,
                now=now,
                visibility_timeout=self.config.visibility_timeout,
            )
            return row, new

        try:
            before, after = self._mutate(key, transition, seen=current)
        except Contention:
            return None  # other workers keep winning this row; try the next candidate
        except CorruptRow as exc:
            self._quarantine(exc.row)  # it became unreadable since we read it
            return None
        if after is None or before is None or after.claim_token != claim_token:
            return None  # not due after all (stale index entry) or claimed by someone else
        took_over = before.claim_token if before.state is State.IN_FLIGHT else None
        if took_over is not None:
            self.metrics.claim_expiries.add(1)
        assert before.ready_at is not None
        assert after.claim_deadline is not None
        # Ready since its due time, or since its last write for work ready at once (whose
        # ready_at may be stamped in the past by the clock-skew allowance).
        ready_since = max(before.ready_at, before.updated_at or before.ready_at)
        self.metrics.queue_latency.record(max(0.0, after.updated_at - ready_since))
        assert after.claimed_generation is not None
        assert after.claimed_token is not None
        return Claim(
            key=key,
            generation=after.claimed_generation,
            token=after.claimed_token,
            reason=after.claimed_reason or "",
            attempt=after.attempts,
            trace_context=after.trace_context,
            owner=owner,
            claim_token=claim_token,
            deadline=after.claim_deadline,
            local_deadline=mono + self.config.visibility_timeout,
            claimed_at=mono,
            sequence=after.version,
            took_over=took_over,
            row=after,
        )

    def _claim_write(
        self,
        claim: Claim,
        transition: Callable[[Row | None, float], Row],
        *,
        result: str,
        extra_items: Sequence[TransactItem] = (),
    ) -> Row:
        def wrapped(row: Row | None, now: float) -> tuple[None, Row | None]:
            return None, transition(row, now)

        try:
            _, after = self._mutate(
                claim.key,
                wrapped,
                seen=claim.row if claim.row is not None else _UNREAD,
                extra_items=extra_items,
            )
        except ClaimLost:
            self.metrics.claims_lost.add(1, {"operation": result})
            raise
        except CorruptRow as exc:
            # Whatever the row says now cannot be read, so this claim cannot be shown to hold:
            # the worker stops as for a lost claim; the next claim or sweep quarantines the row.
            self.metrics.claims_lost.add(1, {"operation": result})
            raise ClaimLost(
                claim.key,
                claim_token=claim.claim_token,
                current_state="unreadable",
                current_owner=None,
                current_claim_token=None,
            ) from exc
        if result != "heartbeat":
            self.metrics.work_duration.record(
                max(0.0, self._clock.monotonic() - claim.claimed_at), {"result": result}
            )
        assert after is not None
        return after

    def heartbeat(self, claim: Claim) -> Claim:
        """Extend ``claim`` by ``visibility_timeout``; raises ``ClaimLost`` if taken over."""
        mono = self._clock.monotonic()
        after = self._claim_write(
            claim,
            lambda row, now: rows.heartbeat(
                row,
                key=claim.key,
                claim_token=claim.claim_token,
                now=now,
                visibility_timeout=self.config.visibility_timeout,
            ),
            result="heartbeat",
        )
        assert after.claim_deadline is not None
        return replace(
            claim,
            deadline=after.claim_deadline,
            local_deadline=mono + self.config.visibility_timeout,
            sequence=after.version,
            row=after,
        )

    def complete(
        self,
        claim: Claim,
        *,
        extra_items: Sequence[TransactItem] = (),
        requeue_after: float | None = None,
    ) -> Row:
        """Finish ``claim`` successfully, atomically with ``extra_items``; returns the row."""
        if requeue_after is not None and requeue_after < 0:
            raise ValueError("requeue_after must be >= 0")
        return self._claim_write(
            claim,
            lambda row, now: rows.complete(
                row,
                key=claim.key,
                claim_token=claim.claim_token,
                now=now,
                requeue_after=requeue_after,
            ),
            result="requeued" if requeue_after is not None else "completed",
            extra_items=extra_items,
        )

    def fail(
        self,
        claim: Claim,
        error: str,
        *,
        retryable: bool,
        extra_items: Sequence[TransactItem] = (),
    ) -> Row:
        """Finish ``claim`` with ``error``: backoff if ``retryable``, else park. Returns the row.

        ``error`` is stored and shown to operators: never put secrets in it.
        """
        jitter = self._rng.random()
        message = rows.clip_text(error, self.config.max_error_length)
        after = self._claim_write(
            claim,
            lambda row, now: rows.fail(
                row,
                key=claim.key,
                claim_token=claim.claim_token,
                now=now,
                error=message,
                retryable=retryable,
                backoff_base=self.config.backoff_base,
                backoff_cap=self.config.backoff_cap,
                jitter=jitter,
            ),
            result="retry" if retryable else "terminal",
            extra_items=extra_items,
        )
        if after.state is State.PARKED:
            self.metrics.parked.add(1)
        elif retryable:
            self.metrics.retries.add(1)
        return after

    def release(self, claim: Claim) -> Row:
        """Give ``claim`` back unprocessed (e.g. on graceful shutdown); returns the row."""
        return self._claim_write(
            claim,
            lambda row, now: rows.release(
                row,
                key=claim.key,
                claim_token=claim.claim_token,
                now=now - self.config.clock_skew_allowance,
            ),
            result="released",
        )

    def expire_stale_claims(self, *, extra_condition: TransactItem | None = None) -> list[str]:
        """Give back every in-flight claim this queue has seen unchanged (no heartbeat, no
        outcome) for a whole ``visibility_timeout`` on its own monotonic clock, whatever its
        stored wall-clock deadline says, and make due now every waiting row whose due time lies
        further ahead than any delay this queue writes (backoff cap + visibility timeout: it was
        written by a host whose clock runs ahead); rewrite every waiting row indexed under a
        shard this queue no longer queries (written before ``shards`` was lowered); returns the
        keys touched.

        Claims are normally taken over through the index once their stored deadline passes. A
        worker whose wall clock ran ahead stores deadlines in everyone else's future; if it dies,
        its units would wait for that skew. Calling this periodically from one place (the
        controller's leader, with its fence as ``extra_condition``) bounds that wait by two
        visibility timeouts. It scans the table: call it every visibility timeout, not in a loop.
        """
        mono = self._clock.monotonic()
        now = self._clock.time()
        # No delay this queue writes exceeds the backoff cap: a waiting row due later than that
        # was written by a host whose clock runs ahead (a requeue or backoff in its own future).
        horizon = now + self.config.backoff_cap + self.config.visibility_timeout
        extra = [extra_condition] if extra_condition is not None else []
        touched: list[str] = []
        for row in list(self._store.rows()):
            if isinstance(row, UnreadableRow):
                if self._quarantine(row, extra_items=extra) is not None:
                    touched.append(str(row.key))
                continue
            if row.state is State.READY and row.ready_at is not None and row.ready_at > horizon:
                change = self._pull_in
            elif row.state is State.IN_FLIGHT and self._stale_for_long_enough(row, mono):
                change = self._expire
            elif row.state is State.READY and (row.shard or 0) >= self.config.shards:
                change = self._reshard
            else:
                continue
            transition = functools.partial(change, key=row.key, version=row.version)
            try:
                wrote, _ = self._mutate(row.key, transition, seen=row, extra_items=extra)
            except (Contention, CorruptRow):
                continue  # busy, so alive; or unreadable since the scan: the next sweep's
            except QueueUnavailable:
                continue  # one row's write failing must not stop the sweep of the others
            if not wrote:
                continue  # it changed before we wrote: alive after all
            if row.state is State.IN_FLIGHT:
                self.metrics.claim_expiries.add(1)
            touched.append(str(row.key))
        return touched

    def _quarantine(
        self, found: UnreadableRow, *, extra_items: Sequence[TransactItem] = ()
    ) -> Row | None:
        """Replace the unreadable row ``found`` with a parked row saying why (see the module
        docstring); returns the row written, or ``None`` when it could not be replaced (it
        changed meanwhile, or its guard values are too large to send back in a condition).
        Raises ``ExtraConditionFailed`` when the caller's extra item fails (the fence)."""
        with self._observed_lock:
            first = self._unreplaced.get(found.key) != found.problem
            if first:
                if len(self._unreplaced) > 4096:
                    self._unreplaced.clear()
                self._unreplaced[found.key] = found.problem
        if first:
            self.metrics.unreadable_row()
            log.warning(
                "work unit %s is unreadable (%s): quarantining it as a parked row",
                found.key,
                found.problem,
                extra={"key": str(found.key)},
            )
        if found.guard is None:
            return None
        now = self._now()
        error = rows.clip_text(f"CorruptRow: {found.problem}", self.config.max_error_length)
        parked = replace(
            rows.quarantine(key=found.key, generation=found.generation, error=error),
            # A live writer's compare-and-swap must never match the new row: continue a
            # readable version (if one more is still readable), else start past any version a
            # writer can hold (one per write).
            version=(
                found.version + 1
                if found.version is not None and found.version + 1 <= rows.MAX_COUNT
                else int(now * 1000)
            ),
            write_id=self._new_id(),
            updated_at=now,
        )
        try:
            self._store.overwrite(parked, guard=found.guard, extra_items=extra_items)
        except RowConflict as conflict:
            if conflict.extra_failed is not None:
                raise conflict.extra_failed from conflict
            return None  # repaired or rewritten meanwhile: whoever wrote it wins
        except ExtraConditionFailed:
            raise
        except QueueError:
            return None  # left for the next claim or sweep to try again
        with self._observed_lock:
            self._unreplaced.pop(found.key, None)
        return parked

    def _pull_in(
        self, current: Row | None, now: float, *, key: AgentKey, version: int
    ) -> tuple[bool, Row | None]:
        new = rows.pull_in(current, key=key, version=version, now=now)
        return new is not None, new

    def _reshard(
        self, current: Row | None, now: float, *, key: AgentKey, version: int
    ) -> tuple[bool, Row | None]:
        new = rows.reshard(current, key=key, version=version)
        return new is not None, new

    def _expire(
        self, current: Row | None, now: float, *, key: AgentKey, version: int
    ) -> tuple[bool, Row | None]:
        ready = now - self.config.clock_skew_allowance
        new = rows.expire(current, key=key, version=version, now=ready)
        return new is not None, new

    # -- operators -----------------------------------------------------------------------------

    def retry(self, key: str) -> Row:
        """Operator retry (``oabctl queue retry KEY``): make a parked or waiting row ready now
        (an unreadable row is quarantined first, so the retry repairs it)."""
        agent = AgentKey(key)

        def transition(row: Row | None, now: float) -> tuple[None, Row | None]:
            return None, rows.retry(row, key=agent, now=now - self.config.clock_skew_allowance)

        try:
            _, after = self._mutate(agent, transition)
        except CorruptRow as exc:
            parked = self._quarantine(exc.row)
            if parked is None:
                raise
            _, after = self._mutate(agent, transition, seen=parked)
        assert after is not None
        return after

    def park(
        self, key: str, error: str, *, extra_condition: TransactItem | None = None
    ) -> Row | None:
        """Park ``key`` with ``error`` on a finding of the caller's (the leader found its
        status unreadable); see :func:`oab.queue.row.park` for what is (not) written. Returns
        the row as stored afterwards. ``extra_condition`` as for :meth:`enqueue`."""
        agent = AgentKey(key)
        message = rows.clip_text(error, self.config.max_error_length)

        def transition(row: Row | None, now: float) -> tuple[bool, Row | None]:
            new = rows.park(row, key=agent, error=message, now=now)
            return new is not None, new

        extra = (extra_condition,) if extra_condition else ()
        try:
            wrote, after = self._mutate(agent, transition, extra_items=extra)
        except CorruptRow as exc:
            return self._quarantine(exc.row, extra_items=extra)
        if wrote:
            self.metrics.parked.add(1)
        return after

    def get(self, key: str) -> Row:
        """The row of ``key``; raises ``KeyNotFound``, or ``CorruptRow`` when it is unreadable."""
        found = self._store.get(AgentKey(key))
        if found is None:
            raise KeyNotFound(key)
        return found

    def list_rows(self) -> list[Row]:
        """Every readable row, sorted by key (``Row.as_json()`` for ``-o json``)."""
        return [r for r in self.scan() if isinstance(r, Row)]

    def scan(self) -> list[Row | UnreadableRow]:
        """Every row, unreadable ones as what could be read of them, sorted by key
        (``oabctl queue``)."""
        return sorted(self._store.rows(), key=lambda r: r.key)

    def depth_by_state(self) -> dict[str, int]:
        """Row counts by state, with waiting rows split into ``ready`` (due) and ``delayed``
        (backoff or requeue) and unreadable rows as ``corrupt``; also refreshes the depth,
        parked and oldest-ready-age gauges."""
        now = self._now()
        depth = {"ready": 0, "delayed": 0, "in_flight": 0, "done": 0, "parked": 0, "corrupt": 0}
        oldest: float | None = None
        for r in self._store.rows():
            if isinstance(r, UnreadableRow):
                depth["corrupt"] += 1  # until the next sweep or claim quarantines it
            elif r.state is State.READY:
                assert r.ready_at is not None
                if r.ready_at <= now:
                    depth["ready"] += 1
                    oldest = max(oldest or 0.0, now - r.ready_at)
                else:
                    depth["delayed"] += 1
            else:
                depth[r.state.value] += 1
        self.metrics.record_depth(depth, oldest_ready_age=oldest)
        return depth
