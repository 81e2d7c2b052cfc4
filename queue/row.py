"""The work-unit row and its pure state transitions (no I/O, no clocks, no randomness).

One row per agent key. Every operation of the queue is a function ``Row | None -> Row`` here; the
:class:`~oab.queue.workqueue.WorkQueue` applies it to the row it last saw and writes the result
conditionally on the row's ``version`` (compare-and-swap), re-applying it to the winner's row when
the condition fails. The semantics therefore live in this module only, and the in-memory store and
the DynamoDB store cannot disagree about them.

States: ``ready`` (waiting; claimable once ``ready_at <= now``), ``in_flight`` (claimed until
``claim_deadline``; ``ready_at`` mirrors the deadline so an expired claim is found by the same
index query), ``done`` and ``parked`` (absent from the ready index).

Times passed in (``now``) are wall-clock epoch seconds: they are stored and compared by every
host. Callers draw randomness (``jitter``) and ids (``claim_token``) and pass them in.

Size: every free text a row stores is bounded. ``last_error`` is cut by the queue to its
configured byte budget (:func:`clip_text`); any stored string over :data:`MAX_TEXT_BYTES` (or a
trace context over :data:`MAX_TRACE_ENTRIES` entries) is refused by the decoder as corrupt, so
one row can never grow towards DynamoDB's 400 KB item limit through the compare-and-swap loop,
which rewrites the whole row on every write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NewType

from oab.queue.errors import ClaimLost, KeyNotFound, NotRetryable

#: Largest stored string of a row a reader accepts (UTF-8 bytes): keys, tokens, reasons, owners
#: and ``last_error`` (whose write budget, ``QueueConfig.max_error_length``, is at most this).
MAX_TEXT_BYTES = 4096
#: Largest trace context (W3C headers plus the enqueuing epoch) a reader accepts.
MAX_TRACE_ENTRIES = 8
#: Largest count or version a reader accepts (integers past it lose exactness as doubles).
MAX_COUNT = 2**53
#: Appended where :func:`clip_text` cut a text; ``{n}`` is the number of bytes removed.
CLIP_MARKER = " [... {n} bytes cut]"

AgentKey = NewType("AgentKey", str)
"""``{namespace}/{name}`` of an agent: the unit of work."""
IdempotencyToken = NewType("IdempotencyToken", str)
"""Deterministic token of one enqueue request (see ``workqueue.idempotency_token``)."""
ClaimToken = NewType("ClaimToken", str)
"""Fresh random token of one claim; every write by the claimer is conditional on it."""
WorkerId = NewType("WorkerId", str)
"""Identity of a worker (replica and thread), stored as the row's owner."""


class State(StrEnum):
    """Lifecycle state of a work unit."""

    READY = "ready"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    PARKED = "parked"


class EnqueueOutcome(StrEnum):
    """What an enqueue did."""

    #: A new unit of work was scheduled (new row, done row, or parked row revived).
    ADDED = "added"
    #: The row was already waiting (or already dirty): merged into the pending work.
    COALESCED = "coalesced"
    #: The same token as the row's: nothing written.
    DUPLICATE = "duplicate"
    #: The row was in flight: marked dirty, it runs once more after completion.
    DIRTIED = "dirtied"
    #: Older than the row's generation: nothing written, the newer generation stands.
    SUPERSEDED = "superseded"
    #: Same generation as a parked row: nothing written; a newer generation or ``retry`` revives.
    PARKED = "parked"


@dataclass(frozen=True, kw_only=True)
class Row:
    """One work unit as stored. ``version`` increases by one on every write."""

    key: AgentKey
    state: State
    generation: int
    token: IdempotencyToken
    reason: str
    trace_context: Mapping[str, str] | None = None
    dirty: bool = False
    attempts: int = 0
    ready_at: float | None = None
    owner: WorkerId | None = None
    claim_token: ClaimToken | None = None
    claim_deadline: float | None = None
    claimed_generation: int | None = None
    claimed_token: IdempotencyToken | None = None
    claimed_reason: str | None = None
    completed_generation: int | None = None
    last_error: str | None = None
    version: int = 0
    write_id: str = ""
    updated_at: float = 0.0
    #: Index shard the row is stored under (``None`` when unindexed or never stored). Written
    #: from the writer's shard count, so it is only read back, never compared.
    shard: int | None = field(default=None, compare=False)

    def claimable(self, now: float) -> bool:
        """Ready and due, or in flight with an expired claim."""
        if self.state is State.READY:
            return self.ready_at is not None and self.ready_at <= now
        if self.state is State.IN_FLIGHT:
            return self.claim_deadline is not None and self.claim_deadline <= now
        return False

    def as_json(self) -> dict[str, Any]:
        """The operator view (``oabctl queue -o json``)."""
        return {
            "key": self.key,
            "state": self.state.value,
            "generation": self.generation,
            "token": self.token,
            "reason": self.reason,
            "attempts": self.attempts,
            "ready_at": self.ready_at,
            "owner": self.owner,
            "claim_deadline": self.claim_deadline,
            "dirty": self.dirty,
            "completed_generation": self.completed_generation,
            "last_error": self.last_error,
        }


def clip_text(text: str, max_bytes: int) -> str:
    """``text`` as valid UTF-8 of at most ``max_bytes`` bytes, cut with :data:`CLIP_MARKER`.

    Lone surrogates (which DynamoDB refuses) become ``?``; a cut never splits a character.
    """
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data.decode("utf-8")
    cut = len(data) - max_bytes
    kept, marker = "", ""
    for _ in range(3):  # the marker's length depends on the count it names: settle it
        marker = CLIP_MARKER.format(n=cut)[:max_bytes]
        kept = data[: max(0, max_bytes - len(marker))].decode("utf-8", "ignore")
        if len(data) - len(kept.encode()) == cut:
            break
        cut = len(data) - len(kept.encode())
    return kept + marker


@dataclass(frozen=True, kw_only=True)
class UnreadableRow:
    """A stored item under a work-unit key that does not decode, as far as it could be read.

    ``guard`` holds the raw stored values of ``version`` and ``write_id`` (``None`` where
    absent): a replacement is written only while both are still what was read, so a concurrent
    repair or a live writer wins. ``guard`` is ``None`` when those values are themselves too
    large to send back in a condition (the row is then reported, never rewritten).
    """

    key: AgentKey
    problem: str
    generation: int = 0
    version: int | None = None
    guard: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The operator view (``oabctl queue -o json``, the keys of :meth:`Row.as_json`): state
        ``corrupt`` and the problem as the last error."""
        return {
            "key": self.key,
            "state": "corrupt",
            "generation": self.generation,
            "token": None,
            "reason": None,
            "attempts": None,
            "ready_at": None,
            "owner": None,
            "claim_deadline": None,
            "dirty": False,
            "completed_generation": None,
            "last_error": f"CorruptRow: {self.problem}",
        }


def ready_shard_of(key: str, shards: int) -> int:
    """The ``ready-index`` shard of a row's ``key`` (sha256, so it is the same in every process
    and Python version). Rows already stored carry it, so it never changes."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % shards


def backoff_delay(attempts: int, *, base: float, cap: float, jitter: float) -> float:
    """Full jitter: ``jitter * min(cap, base * 2**e)`` with ``jitter`` in [0, 1) and
    ``e = attempts - 1`` clamped to 0..62 (no overflow for any stored count; with
    :class:`~oab.queue.config.QueueConfig`'s bounds, ``base * 2**62`` is past any cap)."""
    exponent = min(max(attempts - 1, 0), 62)  # 2**62 * base is past any cap; avoids overflow
    return jitter * min(cap, base * 2.0**exponent)


def _released(row: Row) -> Row:
    return replace(
        row,
        owner=None,
        claim_token=None,
        claim_deadline=None,
        claimed_generation=None,
        claimed_token=None,
        claimed_reason=None,
    )


def _require_claim(row: Row | None, key: AgentKey, claim_token: ClaimToken) -> Row:
    if row is None or row.state is not State.IN_FLIGHT or row.claim_token != claim_token:
        raise ClaimLost(
            key,
            claim_token=claim_token,
            current_state=row.state.value if row else None,
            current_owner=row.owner if row else None,
            current_claim_token=row.claim_token if row else None,
        )
    return row


def enqueue(
    row: Row | None,
    *,
    key: AgentKey,
    generation: int,
    token: IdempotencyToken,
    reason: str,
    trace_context: Mapping[str, str] | None,
    now: float,
) -> tuple[EnqueueOutcome, Row | None]:
    """Apply one enqueue request; ``None`` as the row means nothing is to be written."""
    if row is None:
        return EnqueueOutcome.ADDED, Row(
            key=key,
            state=State.READY,
            generation=generation,
            token=token,
            reason=reason,
            trace_context=trace_context,
            ready_at=now,
        )
    if token == row.token:
        return EnqueueOutcome.DUPLICATE, None
    if generation < row.generation:
        return EnqueueOutcome.SUPERSEDED, None
    newer = generation > row.generation
    # The latest request describes the pending work; a request without a trace keeps the old one.
    fresh = replace(
        row,
        generation=generation,
        token=token,
        reason=reason,
        trace_context=trace_context if trace_context is not None else row.trace_context,
    )
    if row.state is State.READY:
        if newer:
            # A newer spec deserves a fresh start: earlier failures were about the old one.
            assert row.ready_at is not None
            return EnqueueOutcome.COALESCED, replace(
                fresh, attempts=0, ready_at=min(row.ready_at, now)
            )
        return EnqueueOutcome.COALESCED, fresh
    if row.state is State.IN_FLIGHT:
        outcome = EnqueueOutcome.COALESCED if row.dirty else EnqueueOutcome.DIRTIED
        return outcome, replace(fresh, dirty=True)
    if row.state is State.PARKED and not newer:
        return EnqueueOutcome.PARKED, None
    # done, or parked revived by a newer generation
    return EnqueueOutcome.ADDED, replace(
        fresh, state=State.READY, ready_at=now, attempts=0, dirty=False, last_error=None
    )


def claim(
    row: Row,
    *,
    owner: WorkerId,
    claim_token: ClaimToken,
    now: float,
    visibility_timeout: float,
) -> Row | None:
    """Claim a claimable row for ``owner`` (``None`` when it is not claimable at ``now``).

    The claim takes the row's newest generation and clears ``dirty``: whatever arrived before this
    moment is covered by this claim. ``attempts`` counts claims since the last success, so a
    worker that crashes mid-claim uses up an attempt too.
    """
    if not row.claimable(now):
        return None
    deadline = now + visibility_timeout
    return replace(
        row,
        state=State.IN_FLIGHT,
        owner=owner,
        claim_token=claim_token,
        claim_deadline=deadline,
        ready_at=deadline,
        claimed_generation=row.generation,
        claimed_token=row.token,
        claimed_reason=row.reason,
        dirty=False,
        attempts=row.attempts + 1,
    )


def heartbeat(
    row: Row | None,
    *,
    key: AgentKey,
    claim_token: ClaimToken,
    now: float,
    visibility_timeout: float,
) -> Row:
    """Extend the caller's claim to ``now + visibility_timeout``."""
    owned = _require_claim(row, key, claim_token)
    deadline = now + visibility_timeout
    return replace(owned, claim_deadline=deadline, ready_at=deadline)


def complete(
    row: Row | None,
    *,
    key: AgentKey,
    claim_token: ClaimToken,
    now: float,
    requeue_after: float | None,
) -> Row:
    """Finish the caller's claim successfully.

    Dirty rows become ready at once (a newer request arrived while in flight); ``requeue_after``
    schedules the row again without counting a failure; otherwise the row is done.
    """
    owned = _require_claim(row, key, claim_token)
    base = replace(
        _released(owned),
        attempts=0,
        last_error=None,
        completed_generation=owned.claimed_generation,
        dirty=False,
    )
    if owned.dirty:
        return replace(base, state=State.READY, ready_at=now)
    if requeue_after is not None:
        return replace(base, state=State.READY, ready_at=now + requeue_after)
    return replace(base, state=State.DONE, ready_at=None)


def fail(
    row: Row | None,
    *,
    key: AgentKey,
    claim_token: ClaimToken,
    now: float,
    error: str,
    retryable: bool,
    backoff_base: float,
    backoff_cap: float,
    jitter: float,
) -> Row:
    """Finish the caller's claim with an error.

    Dirty rows become ready at once with attempts reset (the failure was about an older
    generation); retryable errors wait a full-jitter backoff on ``attempts``; terminal errors
    park the row.
    """
    owned = _require_claim(row, key, claim_token)
    base = replace(_released(owned), last_error=error, dirty=False)
    if owned.dirty:
        return replace(base, state=State.READY, ready_at=now, attempts=0)
    if retryable:
        delay = backoff_delay(owned.attempts, base=backoff_base, cap=backoff_cap, jitter=jitter)
        return replace(base, state=State.READY, ready_at=now + delay)
    return replace(base, state=State.PARKED, ready_at=None)


def release(row: Row | None, *, key: AgentKey, claim_token: ClaimToken, now: float) -> Row:
    """Give the claim back unprocessed: ready at once, the attempt not counted."""
    owned = _require_claim(row, key, claim_token)
    return replace(
        _released(owned),
        state=State.READY,
        ready_at=now,
        dirty=False,
        attempts=max(0, owned.attempts - 1),
    )


def expire(row: Row | None, *, key: AgentKey, version: int, now: float) -> Row | None:
    """Give back a claim its observer judged dead (``None``: the row changed, leave it).

    Unlike :func:`release`, the attempt stays counted: the worker took it and vanished.
    """
    if row is None or row.state is not State.IN_FLIGHT or row.version != version:
        return None
    return replace(_released(row), state=State.READY, ready_at=now, dirty=False)


def pull_in(row: Row | None, *, key: AgentKey, version: int, now: float) -> Row | None:
    """Make a waiting row due ``now`` (``None``: it changed meanwhile, leave it)."""
    if row is None or row.state is not State.READY or row.version != version:
        return None
    return replace(row, ready_at=now)


def reshard(row: Row | None, *, key: AgentKey, version: int) -> Row | None:
    """Rewrite a waiting row unchanged so that it is indexed under the writer's shard count
    (``None``: it changed meanwhile, and that write re-indexed it already)."""
    if row is None or row.state is not State.READY or row.version != version:
        return None
    return row


def park(row: Row | None, *, key: AgentKey, error: str, now: float) -> Row | None:
    """Park ``key`` with ``error`` on someone else's finding (the leader found its agent's
    status unreadable); ``None``: nothing to write.

    A missing row becomes a parked row of generation 0 (a newer generation or ``retry`` revives
    it as usual); an in-flight row is left to its worker, which reads the same finding and
    decides; a row already parked with the same error is not rewritten.
    """
    if row is None:
        return Row(
            key=key,
            state=State.PARKED,
            generation=0,
            token=IdempotencyToken(""),
            reason="park",
            last_error=error,
        )
    if row.state is State.IN_FLIGHT:
        return None
    if row.state is State.PARKED and row.last_error == error:
        return None
    return replace(_released(row), state=State.PARKED, ready_at=None, dirty=False, last_error=error)


def quarantine(*, key: AgentKey, generation: int, error: str) -> Row:
    """The parked row that replaces an unreadable one (same key, the generation if readable).

    Parked, not ready: the unreadable row may have been in flight, and nothing it said can be
    trusted, so only a newer generation or an operator's ``retry`` makes it claimable again.
    """
    return Row(
        key=key,
        state=State.PARKED,
        generation=generation,
        token=IdempotencyToken(""),
        reason="quarantine",
        last_error=error,
    )


def retry(row: Row | None, *, key: AgentKey, now: float) -> Row:
    """Operator retry: a parked or waiting row becomes ready at once with attempts reset."""
    if row is None:
        raise KeyNotFound(key)
    if row.state not in (State.PARKED, State.READY):
        raise NotRetryable(key, row.state.value)
    return replace(row, state=State.READY, ready_at=now, attempts=0)
