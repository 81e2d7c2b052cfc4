"""The invariant checker: what a chaos run must never show, and what can actually be proven.

Sources
-------
- **Proxy events** (:mod:`faultproxy`): every request every replica sent, with ``t_fwd`` (sent to
  the emulator) and ``t_done`` (answered), on one clock. The emulator executes one request at a
  time, so ``a.t_done < b.t_fwd`` proves ``a`` executed before ``b``. Requests whose windows
  overlap are not ordered, and no check below assumes an order for them.
- **The emulator's state**, read directly (not through a proxy) after the run: the audit run
  log, the status items, the ECS services and task definitions, the bucket's objects.
- **Replica logs** (one file per process incarnation) and the proxies' secret watch.

Invariants (each violation names the invariant and the evidence)
----------------------------------------------------------------
``stale-epoch``
    (a) No fenced write (a ``TransactWriteItems`` holding the lease ``ConditionCheck``) with
    epoch ``e`` was accepted after a lease write with an epoch above ``e`` had been acknowledged
    (provable from the two timestamps; the lease history is every acknowledged lease write, which
    all pass through the proxies). (b) Every audit row's epoch is the epoch of an accepted fenced
    enqueue of the same agent (audit rows are committed under the *claim*, not the lease; the
    epoch they carry is the term that scheduled the work). What is *not* provable here: the order
    of a fenced write against a lease write whose request windows overlap; those are skipped.
``claims``
    Never two live claims on one key, checked where it matters, at the ECS side effect: every
    accepted ECS mutation of agent ``K`` by replica slot ``s`` must follow (``t_done <
    t_fwd``) a queue write that left ``K`` in flight, owned by a worker of ``s``, with no other
    acknowledged queue write of ``K`` in between. Claims are told apart by *claim token*, not by
    replica: when the run of that claim committed an audit row, the row must list the call (by
    the AWS request id the proxy saw), so a worker whose claim was taken over by another worker
    of the same replica is caught too. A worker that kept acting after its claim was taken over,
    completed or expired-and-reclaimed is caught here. (Not attributable, so not judged: a call
    whose answer never reached the replica, and a claim whose outcome is unknown.)
``observed``
    Every agent ends at the generation last applied with phase ``Running`` (observed), or
    ``Failed`` with its error recorded (a terminal failure), within the recovery deadline.
``one-service``
    Exactly one ACTIVE ECS service per agent and none else in the cluster; exactly one audited
    ``CreateService`` per agent (made, or adopted by the run after one that died before its
    commit); no duplicate create attempted (accepted creates of an agent carry
    one client token; the data plane's "not idempotent" refusal counts as an attempt).
``one-revision``
    At most one accepted ``RegisterTaskDefinition`` per (family, generation) across all
    replicas (proxy view, audited or not), at most one audited per generation, and no more ACTIVE
    revisions per family than generations applied.
``audit``
    Per agent, audit sequence numbers are exactly 1..n, the status item's ``audit_seq`` is n,
    each row starts in the phase the previous row ended in, and the status's phase is the last
    row's.
``secrets``
    No planted secret value in the audit log, the status items, any object of the bucket, any
    replica log, or any response a replica received.

Checked only by the scenarios that plant bad data (``poison``; :class:`PoisonEvidence`):

``loops``
    No replica ended on its own: every incarnation was still running when the scenario shut it
    down, and exited 0 on that SIGTERM (70 means a control loop ended); no replica logged
    ``control loop(s) ended`` or anything at level CRITICAL.
``lease``
    Epochs never go backwards: each term (the first acknowledged write of a new holder or epoch)
    has an epoch above the previous term's, except that a term replacing an unreadable item may
    repeat the epoch the garbage hid (documented: the replacement continues from the highest
    epoch the *replacing* standby has seen; counted as ``epoch_reused``, never when no unreadable
    item came between the two terms); every term after a planted readable lease item is above
    its epoch. A planted item is replaced neither before a
    standby can have seen it unchanged for the wait it documents (its configured lease duration
    for an unreadable item, the clamped stored duration for a readable one: the proxy's first
    answered lease request after the plant + that wait), nor later than that + retry period +
    call timeout (the documented bound) + one retry period of slack for a loaded machine.
``poison``
    While the poison is in place, every healthy agent is ``Running`` at its last generation, and
    after the runbook's repair every agent is (stricter than ``observed``, which accepts a
    terminal failure); a
    poisoned agent that was parked carries the reason its kind documents, with an error naming
    what the intended guard refused (not an incidental one), and ``oabctl get`` (or,
    for a manifest that cannot be read, ``oabctl get NAME``'s error) shows it; the replicas'
    ``oab.poison.items`` counts at least the items planted of each (table, kind); every planted
    snapshot record is audited as a failed snapshot, and no text planted in an agent-written
    record (a canary) appears in the audit log, a status item, a queue row or a replica log; no
    audit row's call list exceeds its byte budget.

Every violation is reported by a named *branch* of its invariant (:data:`BRANCHES`, e.g.
``one-service/foreign-service``); ``Checker(disabled=...)`` switches branches off, which is how
``tests/test_chaos_checker_meta.py`` proves that the self-test plants a violation for each.

Time model: only the runner's monotonic clock (proxy and fault stamps) is compared.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faultproxy import Event

from oab.controller.adapters.state import read_runlog, status_from_item
from oab.controller.core.status import AuditRecord
from oab.controller.core.stored import AUDIT_CALLS_BYTES, UnreadableItem


@dataclass(frozen=True)
class Violation:
    """One broken invariant with its evidence, and the checker branch that found it."""

    invariant: str
    detail: str
    branch: str = ""

    def to_json(self) -> dict[str, str]:
        """Plain form for the report."""
        return {"invariant": self.invariant, "branch": self.branch, "detail": self.detail}


INVARIANTS = (
    "stale-epoch",
    "claims",
    "observed",
    "one-service",
    "one-revision",
    "audit",
    "secrets",
    "loops",
    "lease",
    "poison",
)

#: Every branch of the checker, ``invariant/branch``: each can be switched off by name
#: (``Checker(disabled=...)``), so a meta-test can prove the self-test catches each one.
BRANCHES: tuple[str, ...] = (
    "stale-epoch/fenced-write-after-newer-epoch",
    "stale-epoch/audit-epoch-without-enqueue",
    "claims/ecs-call-before-any-claim",
    "claims/ecs-call-without-live-claim",
    "claims/ecs-call-outside-the-claims-run",
    "observed/missing-status",
    "observed/not-observed",
    "one-service/agent-service-count",
    "one-service/foreign-service",
    "one-service/duplicate-create-refused",
    "one-service/create-client-tokens",
    "one-service/audited-creates",
    "one-revision/registered-per-generation",
    "one-revision/audited-per-generation",
    "one-revision/active-revisions",
    "audit/sequence",
    "audit/status-seq",
    "audit/phase-continuity",
    "audit/first-row",
    "audit/status-phase",
    "secrets/blob",
    "secrets/replica-log",
    "secrets/proxied-response",
    "loops/replica-exit",
    "loops/loop-ended-logged",
    "lease/epoch-went-backwards",
    "lease/replaced-too-early",
    "lease/no-leader-within-bound",
    "poison/healthy-agent-not-running",
    "poison/not-recovered",
    "poison/parked-with-wrong-reason",
    "poison/reason-not-shown",
    "poison/not-counted",
    "poison/snapshot-record-not-audited",
    "poison/untrusted-text-copied",
    "poison/audit-row-over-budget",
)

#: Log text that means a replica's control loop ended (``oab.controller.daemon``, ``replica``).
LOOP_ENDED_MARKERS = ("control loop(s) ended", "ended unexpectedly")


def service_name(key: str) -> str:
    """``ns/name`` -> ``oab-ns-name`` (ECS service and task definition family)."""
    ns, name = key.split("/", 1)
    return f"oab-{ns}-{name}"


@dataclass(frozen=True, kw_only=True)
class LeaseWrite:
    """One acknowledged lease write."""

    t_fwd: float
    t_done: float
    holder: str | None
    epoch: int
    slot: str


def lease_history(events: Iterable[Event], lease_table: str) -> list[LeaseWrite]:
    """Every accepted lease write, in acknowledgement order."""
    out: list[LeaseWrite] = []
    for e in events:
        if not e.ok or e.op != "PutItem" or e.t_fwd is None or e.t_done is None:
            continue
        for put in e.info.get("puts", []):
            if put.get("table") == lease_table and "epoch" in put:
                out.append(
                    LeaseWrite(
                        t_fwd=e.t_fwd,
                        t_done=e.t_done,
                        holder=put.get("holder"),
                        epoch=int(put["epoch"]),
                        slot=e.proxy,
                    )
                )
    return sorted(out, key=lambda w: w.t_done)


def terms(history: Sequence[LeaseWrite]) -> list[LeaseWrite]:
    """The first accepted write of every term: a write with a holder whose (holder, epoch)
    differs from the previous such write's. Unlike :func:`acquisitions` it also sees a term
    that reuses an earlier term's epoch under another holder."""
    out: list[LeaseWrite] = []
    last: tuple[str, int] | None = None
    for w in history:
        if w.holder is not None and (w.holder, w.epoch) != last:
            last = (w.holder, w.epoch)
            out.append(w)
    return out


def acquisitions(history: Sequence[LeaseWrite]) -> list[LeaseWrite]:
    """The first accepted write of every epoch with a holder (the start of each term)."""
    seen: set[int] = set()
    out: list[LeaseWrite] = []
    for w in history:
        if w.holder is not None and w.epoch not in seen:
            seen.add(w.epoch)
            out.append(w)
    return out


@dataclass(frozen=True, kw_only=True)
class LeasePlant:
    """A lease item written straight into the table by a scenario (not through any proxy)."""

    what: str
    t_plant: float
    #: The planted epoch, when the item's epoch decodes (``None``: garbage).
    epoch: int | None
    #: How long a standby must see the item unchanged before replacing it (seconds).
    wait_s: float


@dataclass(kw_only=True)
class PoisonEvidence:
    """What a bad-data scenario observed, for :meth:`Checker.check_poison` and friends."""

    #: key -> (phase, observed generation) of each healthy agent while the poison was in place.
    healthy: Mapping[str, tuple[str | None, int]] = field(default_factory=dict)
    #: key -> the generation each healthy agent had to reach.
    healthy_generation: Mapping[str, int] = field(default_factory=dict)
    #: key -> (phase, observed generation) of every agent after the operator's repairs.
    final: Mapping[str, tuple[str | None, int]] = field(default_factory=dict)
    #: key -> the generation every agent had to reach after the repairs.
    final_generation: Mapping[str, int] = field(default_factory=dict)
    #: key -> the parked reason its poison documents.
    expected_reason: Mapping[str, str] = field(default_factory=dict)
    #: key -> text the parked unit's error must hold (proof the intended guard refused it).
    expected_detail: Mapping[str, str] = field(default_factory=dict)
    #: key -> the reason of the parked unit ``oabctl queue -o json`` showed ("" = never parked).
    parked_reason: Mapping[str, str] = field(default_factory=dict)
    #: key -> that parked unit's last error.
    parked_error: Mapping[str, str] = field(default_factory=dict)
    #: key -> what ``oabctl get`` showed about it (a reason, or an error text).
    shown: Mapping[str, str] = field(default_factory=dict)
    #: (table, kind) -> items planted that the loops met.
    planted: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: (table, kind) -> ``oab.poison.items`` summed over every replica.
    counted: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: snapshot record name -> the result its audit call recorded ("" = none).
    records: Mapping[str, str] = field(default_factory=dict)
    #: Texts planted in agent-written data that must never be copied anywhere.
    canaries: Sequence[str] = ()
    #: replica id -> exit status after the scenario's SIGTERM (``None``: it did not exit).
    exits: Mapping[str, int | None] = field(default_factory=dict)
    #: replica id -> exit status of a replica that had ended before that SIGTERM.
    died: Mapping[str, int | None] = field(default_factory=dict)
    #: key -> the byte size of the largest audit row call list stored for it.
    audit_calls_bytes: Mapping[str, int] = field(default_factory=dict)
    leases: Sequence[LeasePlant] = ()


@dataclass(frozen=True, kw_only=True)
class QueueWrite:
    """One acknowledged write of a work-unit row (a claim, heartbeat, outcome or enqueue)."""

    t_done: float
    slot: str
    state: str
    owner: str | None
    claim_token: str | None
    version: int | None
    cond_version: int | None
    #: Audit row sequence numbers committed in the same transaction (an outcome with its row).
    audit_seqs: tuple[int, ...] = ()


class Checker:
    """Runs every invariant over one scenario run's evidence.

    Each violation is reported by a named branch (:data:`BRANCHES`); ``disabled`` switches
    branches off (the meta-test of the self-test does, one at a time).
    """

    def __init__(
        self,
        *,
        events: Sequence[Event],
        tables: Any,
        slot_of: Mapping[str, str],
        agents: Mapping[str, int],
        planted: Sequence[str],
        disabled: Iterable[str] = (),
    ) -> None:
        """``slot_of``: replica id -> proxy name; ``agents``: key -> generation last applied."""
        self.events = sorted(events, key=lambda e: e.t_start)
        self.tables = tables
        self.slot_of = slot_of
        self.agents = dict(agents)
        self.planted = [p for p in planted if p]
        self.by_name = {service_name(k): k for k in self.agents}
        self.disabled = frozenset(disabled)
        unknown = self.disabled - set(BRANCHES)
        if unknown:
            raise ValueError(f"unknown checker branches {sorted(unknown)}")
        self.violations: list[Violation] = []
        #: ECS calls checked against the audited run of their claim (evidence the claim-token
        #: branch judged something in a real run, not only in the self-test).
        self.attributed = 0

    def _v(self, branch: str, detail: str) -> None:
        if branch not in BRANCHES:
            raise ValueError(f"unregistered checker branch {branch!r}")
        if branch not in self.disabled:
            self.violations.append(Violation(branch.split("/", 1)[0], detail, branch))

    # ------------------------------------------------------------------ stale epoch
    def fenced_writes(self) -> list[tuple[Event, int, list[str]]]:
        """Accepted fenced transactions: (event, fence epoch, queue keys written)."""
        out: list[tuple[Event, int, list[str]]] = []
        for e in self.events:
            if e.op != "TransactWriteItems" or not e.ok:
                continue
            for fence in e.info.get("fences", []):
                if fence.get("table") != self.tables.lease or fence.get("epoch") is None:
                    continue
                keys = [
                    str(p["pk"]).removeprefix("unit#")
                    for p in e.info.get("puts", [])
                    if p.get("table") == self.tables.queue and p.get("pk")
                ]
                out.append((e, int(fence["epoch"]), keys))
        return out

    def check_stale_epoch(self, audit: Mapping[str, list[AuditRecord]]) -> None:
        """Invariant ``stale-epoch`` (see the module docstring)."""
        history = lease_history(self.events, self.tables.lease)
        done_times = [w.t_done for w in history]
        # Running maximum of acknowledged epochs, by acknowledgement time.
        max_epoch: list[int] = []
        best = 0
        for w in history:
            best = max(best, w.epoch)
            max_epoch.append(best)
        enqueued: dict[str, set[int]] = defaultdict(set)
        for e, epoch, keys in self.fenced_writes():
            for key in keys:
                enqueued[key].add(epoch)
            assert e.t_fwd is not None
            i = bisect.bisect_left(done_times, e.t_fwd) - 1
            if i >= 0 and max_epoch[i] > epoch:
                self._v(
                    "stale-epoch/fenced-write-after-newer-epoch",
                    f"{e.proxy} {e.op} with fence epoch {epoch} accepted after epoch "
                    f"{max_epoch[i]} was acknowledged (keys {keys})",
                )
        for key, rows in audit.items():
            for row in rows:
                if row.epoch and row.epoch not in enqueued.get(key, set()):
                    self._v(
                        "stale-epoch/audit-epoch-without-enqueue",
                        f"{key} audit seq {row.seq} carries epoch {row.epoch}, which enqueued "
                        "nothing for it",
                    )

    # ----------------------------------------------------------------------- claims
    def queue_writes(self) -> dict[str, list[QueueWrite]]:
        """Every acknowledged work-unit write per key, in acknowledgement order."""
        out: dict[str, list[QueueWrite]] = defaultdict(list)
        for e in self.events:
            if not e.ok or e.t_done is None:
                continue
            puts = e.info.get("puts", [])
            for put in puts:
                if put.get("table") != self.tables.queue or not put.get("pk"):
                    continue
                key = str(put["pk"]).removeprefix("unit#")
                seqs = tuple(
                    int(p["seq"])
                    for p in puts
                    if p.get("table") == self.tables.runlog and p.get("pk") == key and "seq" in p
                )
                out[key].append(
                    QueueWrite(
                        t_done=e.t_done,
                        slot=e.proxy,
                        state=str(put.get("state")),
                        owner=put.get("owner"),
                        claim_token=put.get("claim_token"),
                        version=_int(put.get("version")),
                        cond_version=_int(put.get("cond_version")),
                        audit_seqs=seqs,
                    )
                )
        for writes in out.values():
            writes.sort(key=lambda w: w.t_done)
        return out

    @staticmethod
    def claim_runs(
        writes: Sequence[QueueWrite], audit: Sequence[AuditRecord]
    ) -> dict[str, set[str] | None]:
        """Claim token -> request ids of the mutating calls its run committed.

        A claim's outcome (complete, fail) is written conditionally on the version the claim's
        own last write produced, so the outcome names its claim even though it clears the token.
        Only outcomes committed with an audit row are used (that row lists every mutating call
        of the run); an outcome without one may be a release at shutdown, whose run could have
        made calls it never recorded. Claims missing here (``None`` from ``get``) are not judged.
        """
        token_of: dict[int, str] = {}
        for w in writes:
            if w.claim_token and w.version is not None and w.state == "in_flight":
                token_of[w.version] = w.claim_token
        rows = {r.seq: r for r in audit}
        out: dict[str, set[str] | None] = {}
        for w in writes:
            if w.state == "in_flight" or w.cond_version is None:
                continue
            token = token_of.get(w.cond_version)
            if token is None or not w.audit_seqs:
                continue
            ids: set[str] = set()
            for seq in w.audit_seqs:
                row = rows.get(seq)
                ids |= {c.request_id for c in row.calls if c.request_id} if row else set()
            out[token] = ids
        return out

    def check_claims(self, audit: Mapping[str, list[AuditRecord]] | None = None) -> None:
        """Invariant ``claims``: ECS side effects only under the acting worker's live claim.

        Claims are told apart by claim token, not by replica: an ECS call must follow a queue
        write that left the key in flight under token ``T`` owned by a worker of the calling
        replica, with no other acknowledged write of the key in between; and when the run of
        ``T`` committed its audit row, that row must list the call (by request id). A worker
        whose claim was taken over by another worker *of the same replica* passes the first test
        but not the second: the call is not in the taker's audited run.
        """
        audit = audit or {}
        all_writes = self.queue_writes()
        runs = {k: self.claim_runs(w, audit.get(k, [])) for k, w in all_writes.items()}
        for e in self.events:
            if not e.ok or not e.info.get("mutation") or e.t_fwd is None:
                continue
            name = e.info.get("service") or e.info.get("family") or ""
            key = self.by_name.get(str(name))
            if key is None:
                continue
            writes = all_writes.get(key, [])
            i = bisect.bisect_left([w.t_done for w in writes], e.t_fwd) - 1
            if i < 0:
                self._v(
                    "claims/ecs-call-before-any-claim",
                    f"{e.proxy} {e.op} on {key} before any claim of it",
                )
                continue
            w = writes[i]
            owner_slot = self.slot_of.get(str(w.owner).split("/", 1)[0]) if w.owner else None
            if w.state != "in_flight" or owner_slot != e.proxy:
                self._v(
                    "claims/ecs-call-without-live-claim",
                    f"{e.proxy} {e.op} on {key} while the queue row was {w.state} owned by "
                    f"{w.owner} (slot {owner_slot})",
                )
                continue
            committed = runs.get(key, {}).get(w.claim_token or "")
            attributable = committed is not None and e.delivered and e.request_id
            self.attributed += 1 if attributable else 0
            if attributable and e.request_id not in (committed or set()):
                self._v(
                    "claims/ecs-call-outside-the-claims-run",
                    f"{e.proxy} {e.op} on {key} (request {e.request_id}) during claim "
                    f"{w.claim_token} of {w.owner}, whose committed run does not list it: "
                    "another worker acted on the key",
                )

    # --------------------------------------------------------------------- observed
    def check_observed(self, statuses: Mapping[str, Any]) -> None:
        """Invariant ``observed``."""
        for key, generation in self.agents.items():
            s = statuses.get(key)
            if s is None:
                self._v(
                    "observed/missing-status",
                    f"{key}: no status (generation {generation} never observed)",
                )
                continue
            if s.observed_generation == generation and s.phase == "Running":
                continue
            if s.phase == "Failed" and s.last_error:
                continue
            self._v(
                "observed/not-observed",
                f"{key}: phase {s.phase} observed {s.observed_generation}, want {generation}"
                + (" (Failed without an error)" if s.phase == "Failed" else ""),
            )

    # ------------------------------------------------------------ services, revisions
    def check_ecs(
        self,
        audit: Mapping[str, list[AuditRecord]],
        *,
        services: Sequence[str],
        active_revisions: Mapping[str, int],
        generations_applied: Mapping[str, set[int]],
    ) -> None:
        """Invariants ``one-service`` and ``one-revision``."""
        counts: dict[str, int] = defaultdict(int)
        for name in services:
            counts[name] += 1
        for key in self.agents:
            n = counts.pop(service_name(key), 0)
            if n != 1:
                self._v("one-service/agent-service-count", f"{key}: {n} ACTIVE services")
        for name, n in counts.items():
            self._v("one-service/foreign-service", f"unexpected ACTIVE service {name} (x{n})")
        tokens: dict[str, set[str]] = defaultdict(set)
        registered: dict[tuple[str, int], int] = defaultdict(int)
        for e in self.events:
            if e.op == "CreateService" and e.info.get("service") and e.status is not None:
                if e.ok:
                    tokens[str(e.info["service"])].add(str(e.info.get("client_token")))
                elif e.error == "InvalidParameterException":
                    self._v(
                        "one-service/duplicate-create-refused",
                        f"{e.proxy} attempted a duplicate {e.info['service']}",
                    )
            if e.op == "RegisterTaskDefinition" and e.ok and "generation" in e.info:
                registered[(str(e.info.get("family")), int(e.info["generation"]))] += 1
        for name, toks in tokens.items():
            if len(toks) > 1:
                self._v(
                    "one-service/create-client-tokens",
                    f"{name}: accepted creates with {len(toks)} client tokens",
                )
        for (family, gen), n in registered.items():
            if n > 1:
                self._v(
                    "one-revision/registered-per-generation",
                    f"{family} generation {gen}: {n} revisions registered",
                )
        for key, rows in audit.items():
            creates = sum(1 for r in rows for c in r.calls if c.action == "ecs:CreateService")
            if creates > 1 or (creates == 0 and key in self.agents):
                self._v(
                    "one-service/audited-creates", f"{key}: {creates} audited CreateService calls"
                )
            per_gen: dict[int, int] = defaultdict(int)
            for r in rows:
                for c in r.calls:
                    if c.action == "ecs:RegisterTaskDefinition":
                        per_gen[r.generation] += 1
            for gen, n in per_gen.items():
                if n > 1:
                    self._v(
                        "one-revision/audited-per-generation",
                        f"{key} generation {gen}: {n} audited registrations",
                    )
        for key in self.agents:
            family = service_name(key)
            active = active_revisions.get(family, 0)
            allowed = len(generations_applied.get(key, set())) or 1
            if active > allowed:
                self._v(
                    "one-revision/active-revisions",
                    f"{family}: {active} ACTIVE revisions for {allowed} generations",
                )

    # ------------------------------------------------------------------------ audit
    def check_audit(
        self, audit: Mapping[str, list[AuditRecord]], statuses: Mapping[str, Any]
    ) -> None:
        """Invariant ``audit``."""
        for key in self.agents:
            rows = audit.get(key, [])
            seqs = [r.seq for r in rows]
            if seqs != list(range(1, len(rows) + 1)):
                self._v("audit/sequence", f"{key}: audit sequence {seqs[:20]} has gaps or repeats")
            s = statuses.get(key)
            if s is not None and s.audit_seq != len(rows):
                self._v(
                    "audit/status-seq", f"{key}: status audit_seq {s.audit_seq}, {len(rows)} rows"
                )
            for prev, row in itertools.pairwise(rows):
                if row.from_phase != prev.to_phase:
                    self._v(
                        "audit/phase-continuity",
                        f"{key}: row {row.seq} starts in {row.from_phase}, row {prev.seq} "
                        f"ended in {prev.to_phase}",
                    )
            if rows and rows[0].from_phase is not None:
                self._v("audit/first-row", f"{key}: first row starts in {rows[0].from_phase}")
            if rows and s is not None and s.phase != rows[-1].to_phase:
                self._v(
                    "audit/status-phase",
                    f"{key}: phase {s.phase} but last row ends in {rows[-1].to_phase}",
                )

    # ---------------------------------------------------------------------- secrets
    def check_secrets(self, blobs: Mapping[str, str], log_files: Iterable[Path]) -> None:
        """Invariant ``secrets`` over named text blobs, log files and proxy responses."""
        for where, text in blobs.items():
            for value in self.planted:
                if value in text:
                    self._v("secrets/blob", f"planted secret found in {where}")
        for path in log_files:
            text = path.read_text(errors="replace") if path.exists() else ""
            for value in self.planted:
                if value in text:
                    self._v(
                        "secrets/replica-log", f"planted secret found in replica log {path.name}"
                    )
        for e in self.events:
            if e.secret_hits:
                self._v(
                    "secrets/proxied-response",
                    f"{e.proxy} received a secret value in {e.service} {e.op}",
                )

    # ------------------------------------------------------------------------ loops
    def check_loops(
        self,
        exits: Mapping[str, int | None],
        log_files: Iterable[Path],
        *,
        died: Mapping[str, int | None] | None = None,
    ) -> None:
        """Invariant ``loops`` (bad-data scenarios: nothing stops a replica on purpose until the
        final SIGTERM). ``exits``: replica -> status after that SIGTERM (``None``: did not exit);
        ``died``: replica -> status of those that had exited before it."""
        for replica, code in sorted((died or {}).items()):
            self._v(
                "loops/replica-exit",
                f"replica {replica} exited {code} before the scenario stopped it",
            )
        for replica, code in sorted(exits.items()):
            if code != 0:
                why = "did not exit" if code is None else f"exited {code}"
                self._v("loops/replica-exit", f"replica {replica} {why} on SIGTERM")
        for path in log_files:
            text = path.read_text(errors="replace") if path.exists() else ""
            for line in text.splitlines():
                if any(m in line for m in LOOP_ENDED_MARKERS) or '"level": "CRITICAL"' in line:
                    self._v("loops/loop-ended-logged", f"{path.name}: {line[:300]}")
                    break

    # ------------------------------------------------------------------------ lease
    def lease_seen(self, after: float) -> float | None:
        """When a replica first had an answer from the lease table after ``after``."""
        for e in self.events:
            if e.t_fwd is None or e.t_fwd < after or e.t_done is None or e.status is None:
                continue
            tables = {e.info.get("table")} | {p.get("table") for p in e.info.get("puts", [])}
            if self.tables.lease in tables:
                return e.t_done
        return None

    def check_lease(
        self, plants: Sequence[LeasePlant], *, retry_s: float, call_timeout_s: float
    ) -> dict[str, float]:
        """Invariant ``lease``; returns, per plant, seconds from first seen to the next term,
        and ``epoch_reused`` (terms that reused the epoch an unreadable item had hidden)."""
        started = terms(lease_history(self.events, self.tables.lease))
        figures: dict[str, float] = {"epoch_reused": 0.0}
        for prev, nxt in itertools.pairwise(started):
            if nxt.epoch > prev.epoch:
                continue
            hidden = any(p.epoch is None and prev.t_done < p.t_plant < nxt.t_fwd for p in plants)
            if nxt.epoch == prev.epoch and hidden:
                # Documented: a standby replacing an unreadable item continues from the highest
                # epoch *it* has seen; a term that began just before the garbage hid its epoch
                # may not be among them. The fence (holder and epoch) still tells them apart.
                figures["epoch_reused"] += 1
                continue
            self._v(
                "lease/epoch-went-backwards",
                f"{nxt.slot} started a term ({nxt.holder}) with epoch {nxt.epoch} after the term "
                f"of {prev.holder} with epoch {prev.epoch}",
            )
        for plant in plants:
            after = [a for a in started if a.t_fwd > plant.t_plant]
            if plant.epoch is not None and after and after[0].epoch <= plant.epoch:
                self._v(
                    "lease/epoch-went-backwards",
                    f"{after[0].slot} replaced the planted {plant.what} (epoch {plant.epoch}) "
                    f"with epoch {after[0].epoch}",
                )
            seen = self.lease_seen(plant.t_plant)
            if seen is None:
                continue  # never read: the scenario reports the plant as not met (invalid)
            bound = plant.wait_s + retry_s + call_timeout_s
            if not after or after[0].t_done - seen > bound + retry_s:
                late = f"after {after[0].t_done - seen:.1f} s" if after else "never"
                self._v(
                    "lease/no-leader-within-bound",
                    f"after the planted {plant.what} was first seen, a new term began {late} "
                    f"(bound {bound:.1f} s + {retry_s:.1f} s slack)",
                )
                continue
            figures[plant.what] = after[0].t_done - seen
            if after[0].t_fwd < seen + plant.wait_s:
                self._v(
                    "lease/replaced-too-early",
                    f"{after[0].slot} replaced the planted {plant.what} "
                    f"{after[0].t_fwd - seen:.2f} s after it was first seen (wait "
                    f"{plant.wait_s:.1f} s)",
                )
        return figures

    # ----------------------------------------------------------------------- poison
    def check_poison(self, ev: PoisonEvidence, texts: Mapping[str, str]) -> None:
        """Invariant ``poison`` (see the module docstring); ``texts``: where canaries must not
        appear (audit log, statuses, queue rows, replica logs), by name."""
        for key, gen in sorted(ev.healthy_generation.items()):
            phase, observed = ev.healthy.get(key, (None, 0))
            if phase != "Running" or observed != gen:
                self._v(
                    "poison/healthy-agent-not-running",
                    f"{key}: {phase} at generation {observed} while the poison was in place, "
                    f"want Running at {gen}",
                )
        for key, gen in sorted(ev.final_generation.items()):
            phase, observed = ev.final.get(key, (None, 0))
            if phase != "Running" or observed != gen:
                self._v(
                    "poison/not-recovered",
                    f"{key}: {phase} at generation {observed} after the runbook's repair, "
                    f"want Running at {gen}",
                )
        for key, want in sorted(ev.expected_reason.items()):
            got = ev.parked_reason.get(key, "")
            detail = ev.expected_detail.get(key, "")
            error = ev.parked_error.get(key, "")
            if got and (got != want or detail not in error):
                self._v(
                    "poison/parked-with-wrong-reason",
                    f"{key}: parked with {got} ({error[:200]!r}), want {want} ({detail!r})",
                )
            if got and want not in ev.shown.get(key, ""):
                self._v(
                    "poison/reason-not-shown",
                    f"{key}: parked with {got} but `oabctl get` showed "
                    f"{ev.shown.get(key, '')[:200]!r}",
                )
        for (table, kind), n in sorted(ev.planted.items()):
            got_n = ev.counted.get((table, kind), 0.0)
            if got_n < n:
                self._v(
                    "poison/not-counted",
                    f"oab.poison.items{{{table},{kind}}} = {got_n:g}, {n} planted and met",
                )
        for name, result in sorted(ev.records.items()):
            if not result.startswith("failed: unreadable snapshot record"):
                self._v(
                    "poison/snapshot-record-not-audited",
                    f"snapshot record {name}: audited as {result[:200]!r}",
                )
        for where, text in texts.items():
            for canary in ev.canaries:
                if canary and canary in text:
                    self._v(
                        "poison/untrusted-text-copied",
                        f"text of an agent-written record found in {where}",
                    )
        for key, size in sorted(ev.audit_calls_bytes.items()):
            if size > AUDIT_CALLS_BYTES:
                self._v(
                    "poison/audit-row-over-budget",
                    f"{key}: an audit row's call list holds {size} bytes "
                    f"(budget {AUDIT_CALLS_BYTES})",
                )


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------- state readers
def read_audit(ddb: Any, table: str, keys: Iterable[str]) -> dict[str, list[AuditRecord]]:
    """Every agent's audit rows, oldest first."""
    return {k: read_runlog(ddb, table, k, newest_first=False) for k in keys}


def read_statuses(
    ddb: Any, table: str, *, fields: Sequence[str] = ()
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every status item (parsed) and the raw items (for the secret search), by scan.

    ``fields`` limits the attributes read (a progress poll needs a few, the final check all).
    """
    parsed: dict[str, Any] = {}
    raw: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    if fields:
        names = {f"#a{i}": name for i, name in enumerate(("pk", "sk", *fields))}
        kwargs["ProjectionExpression"] = ", ".join(names)
        kwargs["ExpressionAttributeNames"] = names
    while True:
        resp = ddb.scan(**kwargs)
        for item in resp.get("Items", []):
            raw.append(item)
            if item.get("sk", {}).get("S") == "status":
                try:
                    s = status_from_item(item)
                except UnreadableItem:
                    continue  # a corrupt status (the poison scenario plants one) reads as absent
                parsed[s.key] = s
        if "LastEvaluatedKey" not in resp:
            return parsed, raw
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def active_services(ecs: Any, cluster: str) -> list[str]:
    """Names of every ACTIVE service of the cluster."""
    arns: list[str] = []
    kwargs: dict[str, Any] = {"cluster": cluster}
    while True:
        resp = ecs.list_services(**kwargs)
        arns += resp.get("serviceArns", [])
        if not resp.get("nextToken"):
            break
        kwargs["nextToken"] = resp["nextToken"]
    names: list[str] = []
    for i in range(0, len(arns), 10):
        resp = ecs.describe_services(cluster=cluster, services=arns[i : i + 10])
        names += [s["serviceName"] for s in resp["services"] if s.get("status") == "ACTIVE"]
    return names


def active_revisions(ecs: Any) -> dict[str, int]:
    """ACTIVE task definition revisions per family."""
    out: dict[str, int] = defaultdict(int)
    kwargs: dict[str, Any] = {"status": "ACTIVE"}
    while True:
        resp = ecs.list_task_definitions(**kwargs)
        for arn in resp.get("taskDefinitionArns", []):
            out[arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]] += 1
        if not resp.get("nextToken"):
            return dict(out)
        kwargs["nextToken"] = resp["nextToken"]


def bucket_texts(s3: Any, bucket: str) -> dict[str, str]:
    """Every object of the bucket (all versions' current bodies), as text."""
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[f"s3://{bucket}/{obj['Key']}"] = body.decode(errors="replace")
    return out


def audit_text(audit: Mapping[str, list[AuditRecord]]) -> str:
    """The audit log as one JSON text (for the secret search)."""
    return json.dumps({k: [r.to_json() for r in rows] for k, rows in audit.items()})
