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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faultproxy import Event

from oab.controller.adapters.state import read_runlog, status_from_item
from oab.controller.core.status import AuditRecord


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
)


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
                s = status_from_item(item)
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
