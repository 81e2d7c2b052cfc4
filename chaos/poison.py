"""The ``poison`` scenario: every kind of bad stored item, planted while the fleet changes.

Issue 11 asks that no single agent, manifest or row can stop the control plane. This scenario
proves it end to end with the harness's real replica processes on the emulator (simulated ECS
data plane): the fleet's *healthy* agents get a new generation and, while that rolls out, each
item below is planted at a seeded random time, straight into the emulator's tables and bucket
with boto3 (never through the product), as a bug, a manual edit, an older backup or a hostile
tenant would leave it. Each poison targets its own agent (its *role*), so what happens to it is
told apart from what happens to everyone else.

========================  =========================================================  ==========
plant                     what is written                                            parked as
========================  =========================================================  ==========
``queue-row``             the agent's work-unit row with wrong types and missing     CorruptRow
                          attributes, indexed and due (claims meet it)
``index-key``             the agent's row with the ``ready-index`` range key          CorruptRow
                          ``ready_at`` as a string (see below)
``status``                the agent's status item with ``audit_seq`` a string and    CorruptStatus
                          ``conditions`` wrong-typed (conditional on the sequence
                          read, so no commit is lost), then a change for it
``commit``                its commit refused by DynamoDB (the fault proxy answers    CommitRejected
                          its first ``TransactWriteItems`` that puts its audit row
                          with ``ValidationException: Item size has exceeded the
                          maximum allowed size``), then a change for it
``alias-bomb``            its manifest replaced by a YAML alias bomb (9^9 nodes      InvalidManifest
                          expanded, under ``spec.platform.k8s``)
``identity``              its manifest replaced by a valid document naming a         InvalidManifest
                          *healthy* agent (another image)
``oversized-manifest``    a 2 MB object under a new agent's key                      InvalidManifest
``invalid-yaml``          invalid YAML under a new agent's key                       InvalidManifest
``snapshot``              six records under ``snapshots/{ns}/{name}/`` as its        (converges)
                          sidecar would write them: three of ~300 KB, one nested 64
                          deep, one wrong-typed, one naming another agent; then a
                          change (its manifest has ``bootstrapFrom``)
``change-record``         a change record (wrong types) naming a healthy agent       (skipped)
``manifest-key``          an object ``manifests/{ns}/x/{name}.yaml``                 (skipped)
``lease-garbage``         the lease item with wrong types                            (replaced)
``lease-huge``            a readable lease naming a crashed holder, epoch + 1,       (replaced)
                          stored duration 10^12 ms
========================  =========================================================  ==========

``index-key``: real DynamoDB refuses to store an item whose index key attribute has the wrong
type (``ValidationException``), so this row can only exist on the emulator, which stores it and
then answers every query of that index shard with HTTP 500. It is planted for what it proves
there: a shard whose query fails does not stop claims from the other shards, and the leader's
sweep (a table scan, not the index) quarantines the row, which heals the shard.

Pass (the invariant checker, :class:`~invariants.PoisonEvidence`): 0 violations of every
invariant; while the poison is in place every healthy agent (the snapshot agent included) is
``Running`` at its new generation; every poisoned agent is parked with the reason its kind
documents, shown by ``oabctl queue -o json`` and ``oabctl get -o json`` (or, for a manifest that
cannot be read, by ``oabctl get NAME``'s error); the replicas' ``oab.poison.items`` (read from
their metric exports) counts every planted item of each (table, kind); each snapshot record is
audited once as a failed snapshot and none of its text is copied anywhere; a leader exists
within the documented bound after each planted lease and the epoch never goes backwards; no
replica ends or logs that a control loop ended, and each exits 0 on the final SIGTERM.

A plant the loops never met (the unit never parked, the record never ingested, the lease never
read before it was replaced, the log line never written) leaves its figure at 0: the run is
``invalid``, not green (``required``).

After the checks of the poisoned state, the scenario repairs each agent the way
``ops/runbooks/bad-data.md`` says (``oabctl queue retry``, the status item restored from the
copy read before it was corrupted, a corrected manifest applied, the bad key deleted) and waits
until the whole fleet converges, so the usual invariants (audit continuity, one service, ...)
judge every agent, poisoned ones included.

Time model: the runner's monotonic clock (plant times, proxy events); lease plants wait for the
previous one to be replaced, so their times shift by up to a minute (``lease-huge``'s clamp).
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml
from faultproxy import Fault
from harness import BUCKET
from invariants import LeasePlant, PoisonEvidence, lease_history, read_statuses, terms

from oab.leader.record import MAX_LEASE_DURATION_MS, LeaseRecord, lease_key
from oab.queue.row import ready_shard_of
from oab.queue.store import pk_of

if TYPE_CHECKING:
    from scenarios import Run

#: Roles of the fleet's last agents (applied at the start); the others are healthy.
FLEET_ROLES = ("queue-row", "index-key", "status", "commit", "snapshot", "alias-bomb", "identity")
#: Roles of agents that never had a valid manifest (keys after the fleet's).
NEW_ROLES = ("oversized-manifest", "invalid-yaml")
#: Healthy agents the scenario needs at least.
MIN_HEALTHY = 3
MIN_AGENTS = len(FLEET_ROLES) + MIN_HEALTHY

#: The reason each poisoned role must be parked with.
EXPECTED_REASON = {
    "queue-row": "CorruptRow",
    "index-key": "CorruptRow",
    "status": "CorruptStatus",
    "commit": "CommitRejected",
    "alias-bomb": "InvalidManifest",
    "identity": "InvalidManifest",
    "oversized-manifest": "InvalidManifest",
    "invalid-yaml": "InvalidManifest",
}
#: Text the parked unit's error must hold: proof that the guard under test refused the item
#: (a bomb must be refused for its node count, not for a missing field).
EXPECTED_DETAIL = {
    "queue-row": "CorruptRow: ",
    "index-key": "ready_at",
    "status": "CorruptStatus: state item agent#",
    "commit": "ValidationException",
    "alias-bomb": "YAML nodes",
    "identity": "not this key's",
    "oversized-manifest": "over the 1 MiB limit",
    "invalid-yaml": "not valid YAML",
}
#: Plants that need no agent of their own.
GLOBAL_PLANTS = ("change-record", "manifest-key", "lease-garbage", "lease-huge")
#: Planted items of each ``oab.poison.items`` (table, kind), once met.
COUNTED = {
    ("queue", "row"): ("queue-row", "index-key"),
    ("state", "status"): ("status",),
    ("state", "commit"): ("commit",),
    ("state", "change"): ("change-record",),
    ("bucket", "key"): ("manifest-key",),
}
#: Log lines (``msg`` text) that prove a plant was met by a replica.
MET_BY_LOG = {
    "change-record": "skipped an unreadable change record",
    "manifest-key": "that are not agent manifests",
    "lease-garbage": "lease item is unreadable",
    "lease-huge": "exceeds the maximum",
}
#: Seconds after the fleet change within which every plant is scheduled.
PLANT_WINDOW_S = 8.0
#: The daemon's resync period in this scenario (bad manifests are found by the resync).
RESYNC_PERIOD_S = 10.0
#: Every plant; each must be met by the loops (figure ``met_<plant>``) for a run to count.
PLANTS = (*EXPECTED_REASON, "snapshot", *GLOBAL_PLANTS)
REQUIRED = tuple(f"met_{name.replace('-', '_')}" for name in PLANTS)
#: A stored lease duration far beyond the clamp (about 31 years).
HUGE_DURATION_MS = 10**12
#: Bytes of each oversized snapshot record.
BIG_RECORD_BYTES = 300_000


def poison(run: Run) -> None:
    """The scenario (registered in :data:`scenarios.SCENARIOS`)."""
    Poison(run)()


def prepare(run: Run) -> None:
    """Give the fleet's last agents their roles (before the first apply: the snapshot agent's
    manifest has ``bootstrapFrom`` from generation 1 on)."""
    keys = run.keys
    if len(keys) < MIN_AGENTS:
        raise RuntimeError(f"poison needs at least {MIN_AGENTS} agents, got {len(keys)}")
    roles = dict(zip(FLEET_ROLES, keys[-len(FLEET_ROLES) :], strict=True))
    n = len(keys)
    roles |= {role: f"chaos/a{n + i:04d}" for i, role in enumerate(NEW_ROLES)}
    run.roles = roles
    run.bootstrap.add(roles["snapshot"])


def alias_bomb(*, indent: int) -> str:
    """YAML mapping lines (at ``indent``) that expand to 9^9 strings: a few hundred bytes."""
    pad = " " * indent
    levels = "abcdefghi"
    lol = ",".join(['"lol"'] * 9)
    lines = [f"{pad}{levels[0]}: &{levels[0]} [{lol}]"]
    for prev, cur in itertools.pairwise(levels):
        lines.append(f"{pad}{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines)


@dataclass
class Plant:
    """One planted item: when it was planted and whether the loops met it."""

    name: str
    key: str
    at: float
    t_plant: float | None = None
    met: bool = False


@dataclass
class Poison:
    """One run of the scenario (see the module docstring)."""

    run: Run
    plants: list[Plant] = field(default_factory=list)
    canaries: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    backup: dict[str, Any] = field(default_factory=dict)
    leases: list[LeasePlant] = field(default_factory=list)
    parked: dict[str, str] = field(default_factory=dict)
    parked_error: dict[str, str] = field(default_factory=dict)
    parked_at: dict[str, float] = field(default_factory=dict)
    evidence: PoisonEvidence = field(default_factory=PoisonEvidence)

    @property
    def h(self) -> Any:
        return self.run.h

    @property
    def roles(self) -> dict[str, str]:
        return self.run.roles

    def role(self, name: str) -> str:
        return self.roles[name]

    def name_of(self, key: str) -> str:
        return key.split("/", 1)[1]

    # ------------------------------------------------------------------ the scenario
    def __call__(self) -> None:
        run = self.run
        fleet_roles = {self.role(r) for r in FLEET_ROLES}
        healthy = [k for k in run.keys if k not in fleet_roles]
        try:
            run.plant_secrets([self.role(r) for r in NEW_ROLES])
            run.wait_leader(timeout=30)
            t0 = run.apply(healthy)
            for name in PLANTS:
                key = self.roles.get(name, "")
                self.plants.append(Plant(name=name, key=key, at=run.rng.uniform(0, PLANT_WINDOW_S)))
            self.plants.sort(key=lambda p: p.at)
            for plant in self.plants:
                time.sleep(max(0.0, t0 + plant.at - time.monotonic()))
                self.plant(plant)
            self.wait_met(healthy=[*healthy, self.role("snapshot")], timeout=240.0)
            self.observe_as_operator()
            self.repair()
            t_repair = time.monotonic()
            # Running only: the poisoned agents were Failed before the repair.
            took = run.wait_converged(since=t_repair, timeout=180.0, running=True)
            if took is not None:
                run.result.figures["converged_after_repair_s"] = took
            statuses, _ = read_statuses(self.h.ddb, self.h.tables.state)
            self.evidence.final = {
                k: (s.phase, s.observed_generation) if (s := statuses.get(k)) else (None, 0)
                for k in run.gen
            }
            self.evidence.final_generation = dict(run.gen)
            self.audited_records()
        finally:
            # Whatever failed above, the replicas' fate and counts are evidence too.
            self.shutdown()
            self.counted()
            run.poison = self.evidence

    # ----------------------------------------------------------------------- plants
    def plant(self, plant: Plant) -> None:
        """Write one bad item (and, where a run must meet it, apply a change)."""
        fn: Callable[[Plant], None] = getattr(self, "_" + plant.name.replace("-", "_"))
        if plant.name.startswith("lease-") and self.leases:
            # One lease poison at a time: the previous one must have been replaced by a replica
            # (planting over it would replace it for them).
            self.run.wait_leader(timeout=MAX_LEASE_DURATION_MS / 1000 + 60)
        plant.t_plant = self.h.note("plant", plant=plant.name, key=plant.key)
        fn(plant)

    def _queue_row(self, plant: Plant) -> None:
        key = plant.key
        current = self.h.ddb.get_item(
            TableName=self.h.tables.queue,
            Key={"pk": {"S": pk_of(key)}, "sk": {"S": "unit"}},
            ConsistentRead=True,
        )["Item"]
        # Its generation stays readable: a quarantined row keeps it, so the re-enqueue of the
        # same generation a new leader's change-feed replay makes leaves it parked (a row with
        # no readable generation is parked at 0 and revived by that replay, within seconds).
        item = {
            "pk": current["pk"],
            "sk": current["sk"],
            "key": {"S": key},
            "generation": current["generation"],
            "state": {"S": "ready"},
            "ready_at": {"N": "1.000"},  # due, so claims meet it
            "ready_shard": {"S": str(ready_shard_of(key, 4))},
            "version": {"N": "900"},
            "write_id": {"S": "poison"},
            "attempts": {"S": "many"},
            "dirty": {"N": "1"},
        }  # and no token, reason, updated_at
        self.h.ddb.put_item(TableName=self.h.tables.queue, Item=item)

    def _index_key(self, plant: Plant) -> None:
        key = plant.key
        current = self.h.ddb.get_item(
            TableName=self.h.tables.queue,
            Key={"pk": {"S": pk_of(key)}, "sk": {"S": "unit"}},
            ConsistentRead=True,
        )["Item"]
        self.h.ddb.put_item(
            TableName=self.h.tables.queue,
            Item={
                **current,
                "state": {"S": "ready"},
                "ready_shard": {"S": str(ready_shard_of(key, 4))},
                "ready_at": {"S": "soon"},  # the index's range key, as a string
            },
        )

    def _status(self, plant: Plant) -> None:
        ddb, table = self.h.ddb, self.h.tables.state
        status_key = {"pk": {"S": f"agent#{plant.key}"}, "sk": {"S": "status"}}
        for _ in range(20):
            item = ddb.get_item(TableName=table, Key=status_key, ConsistentRead=True)["Item"]
            try:
                ddb.put_item(
                    TableName=table,
                    Item={**item, "audit_seq": {"S": "many"}, "conditions": {"S": '[{"type": 7}]'}},
                    # Only over the status read: a commit in between would otherwise be lost,
                    # and the copy kept for the repair would be stale.
                    ConditionExpression="audit_seq = :n",
                    ExpressionAttributeValues={":n": item["audit_seq"]},
                )
            except ddb.exceptions.ConditionalCheckFailedException:
                continue
            self.backup[plant.key] = item
            self.run.apply([plant.key])
            return
        raise RuntimeError(f"status: {plant.key}'s status kept changing")

    def _commit(self, plant: Plant) -> None:
        refuse = Fault(
            action="http",
            service="dynamodb",
            op="TransactWriteItems",
            status=400,
            code="ValidationException",
            message="Item size has exceeded the maximum allowed size",
            put=(self.h.tables.runlog, plant.key),
            times=1,
        )
        for slot in self.h.slots:
            slot.proxy.set_faults([refuse])
        self.run.apply([plant.key])

    def _snapshot(self, plant: Plant) -> None:
        key = plant.key
        canary = f"poison-canary-{uuid.UUID(int=self.run.rng.getrandbits(128)).hex}"
        self.canaries.append(canary)
        base = {"agent": key, "trigger": "on-demand", "status": "failed", "taken_at": 1.0}
        records: list[tuple[str, Any]] = [
            (f"big{i}", {**base, "id": f"big{i}", "error": canary + "x" * BIG_RECORD_BYTES})
            for i in range(3)
        ]
        deep: Any = canary
        for _ in range(64):
            deep = [deep]
        records += [
            ("deep", {**base, "id": "deep", "error": deep}),
            ("typed", {**base, "id": "typed", "taken_at": "yesterday", "error": canary}),
            ("foreign", {**base, "id": "foreign", "agent": "chaos/other", "error": canary}),
        ]
        for i, (rid, body) in enumerate(records):
            name = f"20290101T0000{i:02d}.000Z-{rid}"
            self.records.append(name)
            self.h.s3.put_object(
                Bucket=BUCKET,
                Key=f"snapshots/{key}/{name}.json",
                Body=json.dumps(body).encode(),
            )
        self.run.apply([key])

    def _put_manifest(self, key: str, body: str) -> None:
        self.h.s3.put_object(Bucket=BUCKET, Key=f"manifests/{key}.yaml", Body=body.encode())

    def _stored_manifest(self, key: str) -> str:
        body = self.h.s3.get_object(Bucket=BUCKET, Key=f"manifests/{key}.yaml")["Body"].read()
        return str(body.decode())

    def _alias_bomb(self, plant: Plant) -> None:
        # The agent's own stored document (valid in every other way) with the bomb added.
        doc = yaml.safe_load(self._stored_manifest(plant.key))
        doc["spec"].setdefault("platform", {})["k8s"] = "BOMB"
        text = yaml.safe_dump(doc, sort_keys=False)
        match = re.search(r"^( *)k8s: BOMB$", text, flags=re.MULTILINE)
        assert match is not None
        bomb = alias_bomb(indent=len(match.group(1)) + 2)
        self._put_manifest(plant.key, text.replace(match.group(0), f"{match.group(1)}k8s:\n{bomb}"))

    def _identity(self, plant: Plant) -> None:
        # A healthy agent's stored document, byte for byte, under this agent's key (a copy made
        # with S3 access): it names the other agent, with its generation and uid.
        self._put_manifest(plant.key, self._stored_manifest(self.run.keys[0]))

    def _oversized_manifest(self, plant: Plant) -> None:
        from scenarios import MANIFEST

        body = MANIFEST.format(name=self.name_of(plant.key), gen=1, bootstrap="")
        self._put_manifest(plant.key, body + "# " + "x" * 2_000_000 + "\n")

    def _invalid_yaml(self, plant: Plant) -> None:
        self._put_manifest(plant.key, "apiVersion: oab.dev/v1\nkind: [OABService\n  - {\n")

    def _manifest_key(self, plant: Plant) -> None:
        from scenarios import MANIFEST

        body = MANIFEST.format(name="stray", gen=1, bootstrap="")
        self.h.s3.put_object(Bucket=BUCKET, Key="manifests/chaos/x/stray.yaml", Body=body.encode())

    def _change_record(self, plant: Plant) -> None:
        from oab.controller.base.names import change_shard_of as change_shard

        target = f"manifests/{self.run.keys[0]}.yaml"
        ms = int(time.time() * 1000)
        self.h.ddb.put_item(
            TableName=self.h.tables.state,
            Item={
                "pk": {"S": f"changes#{change_shard(target)}"},
                "sk": {"S": f"{ms:013d}#{target}#2"},
                "key": {"S": target},
                "generation": {"S": "two"},
                "kind": {"N": "1"},
                "trace_context": {"S": "[" * 200 + "]" * 200},
            },
        )

    def _lease_garbage(self, plant: Plant) -> None:
        assert plant.t_plant is not None
        self.h.ddb.put_item(
            TableName=self.h.tables.lease,
            Item={
                **lease_key("controller"),
                "holder": {"N": "7"},
                "epoch": {"S": "many"},
                "revision": {"BOOL": True},
                "lease_duration_ms": {"S": "forever"},
            },
        )
        self.leases.append(
            LeasePlant(
                what=plant.name,
                t_plant=plant.t_plant,
                epoch=None,
                wait_s=self.h.timing.lease_duration_s,
            )
        )

    def _lease_huge(self, plant: Plant) -> None:
        h = self.h
        for _ in range(20):
            current = h.lease()
            if current is None or current.holder is None:
                time.sleep(0.2)
                continue
            wall = time.time()
            ghost = LeaseRecord(
                name="controller",
                holder="ghost-of-a-crashed-replica",  # type: ignore[arg-type]
                epoch=current.epoch + 1,  # type: ignore[arg-type]
                revision=uuid.uuid4().hex,  # type: ignore[arg-type]
                lease_duration_ms=HUGE_DURATION_MS,
                transitions=current.transitions + 1,
                acquired_at=wall,
                renewed_at=wall,
            )
            # Stamped before the write is sent: a lease read sent before it cannot have seen it.
            sent = h.now()
            try:
                # Over the revision read, so the planted epoch is above every epoch written.
                h.ddb.put_item(
                    TableName=h.tables.lease,
                    Item=ghost.to_item(),
                    ConditionExpression="revision = :r",
                    ExpressionAttributeValues={":r": {"S": current.revision}},
                )
            except h.ddb.exceptions.ConditionalCheckFailedException:
                continue
            h.note("plant", plant="lease-huge (written)", epoch=int(ghost.epoch))
            plant.t_plant = sent
            self.leases.append(
                LeasePlant(
                    what=plant.name,
                    t_plant=sent,
                    epoch=int(ghost.epoch),
                    wait_s=MAX_LEASE_DURATION_MS / 1000,
                )
            )
            return
        raise RuntimeError("lease-huge: no readable lease to plant over")

    # --------------------------------------------------------------------- observing
    def queue_rows(self) -> dict[str, dict[str, Any]]:
        """``oabctl queue -o json``, by key."""
        listed = json.loads(self.h.oabctl("queue", "-o", "json"))
        return {str(r["key"]): r for r in listed.get("items", [])}

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.h.logs.glob("*.log")))

    def wait_met(self, *, healthy: list[str], timeout: float) -> None:
        """Wait until every plant was met and every healthy agent runs its last generation;
        then record what was seen (the poisoned state, before any repair)."""
        run, h = self.run, self.h
        deadline = time.monotonic() + timeout
        while True:
            rows = self.queue_rows()
            for role, key in self.roles.items():
                row = rows.get(key)
                parked = row is not None and row["state"] == "parked"
                if role in EXPECTED_REASON and parked and key not in self.parked:
                    self.parked[key] = parked_reason(row)
                    self.parked_error[key] = str(row["last_error"] or "")
                    self.parked_at[key] = h.note(
                        "parked", key=key, role=role, last_error=str(row["last_error"])[:300]
                    )
            statuses, _ = read_statuses(
                h.ddb,
                h.tables.state,
                fields=("key", "phase", "observed_generation", "last_snapshot"),
            )
            logs = self.log_text()
            history = lease_history(run.events(), h.tables.lease)
            acq = terms(history)
            for plant in self.plants:
                if plant.name in EXPECTED_REASON:
                    plant.met = plant.key in self.parked
                elif plant.name == "snapshot":
                    s = statuses.get(plant.key)
                    plant.met = bool(s and s.last_snapshot.endswith(self.records[-1] + ".json"))
                elif plant.name.startswith("lease-"):
                    replaced = any(a.t_fwd > (plant.t_plant or 0) for a in acq)
                    plant.met = replaced and MET_BY_LOG[plant.name] in logs
                else:
                    plant.met = MET_BY_LOG[plant.name] in logs
            converged = all(
                (s := statuses.get(k)) is not None
                and s.phase == "Running"
                and s.observed_generation == run.gen[k]
                for k in healthy
            )
            if (converged and all(p.met for p in self.plants)) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        ev = self.evidence
        ev.healthy = {
            k: (s.phase, s.observed_generation) if (s := statuses.get(k)) else (None, 0)
            for k in healthy
        }
        ev.healthy_generation = {k: run.gen[k] for k in healthy}
        ev.expected_reason = {self.role(r): reason for r, reason in EXPECTED_REASON.items()}
        ev.parked_reason = dict(self.parked)
        ev.parked_error = dict(self.parked_error)
        ev.expected_detail = {self.role(r): text for r, text in EXPECTED_DETAIL.items()}
        for plant in self.plants:
            run.result.figures[f"met_{plant.name.replace('-', '_')}"] = float(plant.met)
        times = self._plant_times()
        t_parked = [self.parked_at[k] - t for k, t in times.items() if k in self.parked_at]
        if t_parked:
            run.result.figures["parked_max_s"] = max(t_parked)
        run.result.figures["planted"] = float(len(self.plants))
        run.result.figures["parked"] = float(len(self.parked))
        missing = [p.name for p in self.plants if not p.met]
        if missing:
            h.note("not met", plants=missing)

    def _plant_times(self) -> dict[str, float]:
        return {p.key: p.t_plant for p in self.plants if p.key and p.t_plant is not None}

    def observe_as_operator(self) -> None:
        """What ``oabctl get`` shows for each poisoned agent (the reason must be there): the
        listing's JSON, and for a manifest the listing cannot read, the warning it prints
        instead and the error ``oabctl get NAME`` exits with."""
        code, text, listing_err = self.h.oabctl_result("get", "-n", "chaos", "-o", "json")
        if code != 0:
            raise RuntimeError(f"oabctl get -n chaos failed ({code}): {listing_err[-2000:]}")
        items = {f"chaos/{i['metadata']['name']}": i for i in json.loads(text).get("items", [])}
        shown: dict[str, str] = {}
        for role in EXPECTED_REASON:
            key = self.role(role)
            doc = items.get(key)
            if doc is not None:
                shown[key] = shown_reason(doc)
                continue
            warned = [ln for ln in listing_err.splitlines() if f"manifests/{key}.yaml" in ln]
            code, _out, err = self.h.oabctl_result("get", self.name_of(key), "-n", "chaos")
            shown[key] = f"listing: {' '.join(warned)[:300]}; get: exit {code}: {err.strip()[:300]}"
            if warned and code == 1 and "the stored object cannot be read" in err:
                shown[key] += " (InvalidManifest)"
        self.evidence.shown = shown
        for key, text in shown.items():
            self.h.note("shown", key=key, text=text[:400])

    def audited_records(self) -> None:
        """The audit result of each planted snapshot record (``oabctl history -o json``)."""
        key = self.role("snapshot")
        listed = json.loads(
            self.h.oabctl("history", self.name_of(key), "-n", "chaos", "-o", "json")
        )
        results: dict[str, str] = dict.fromkeys(self.records, "")
        for row in listed.get("items", []):
            for call in row.get("calls") or []:
                rid = str(call.get("requestId") or call.get("request_id") or "")
                name = rid.split(":", 1)[-1]
                if name in results:
                    results[name] = str(call.get("result") or "")
        self.evidence.records = results

    def counted(self) -> None:
        """``oab.poison.items`` of every replica (after their final flush) vs what was met."""
        totals = self.h.metric_totals("oab.poison.items")
        counted: dict[tuple[str, str], float] = {}
        for attrs, value in totals.items():
            a = dict(attrs)
            pair = (a.get("oab.table", ""), a.get("oab.kind", ""))
            counted[pair] = counted.get(pair, 0.0) + value
        met = {p.name for p in self.plants if p.met}
        self.evidence.counted = counted
        self.evidence.planted = {
            pair: sum(1 for name in names if name in met) for pair, names in COUNTED.items()
        }
        self.evidence.canaries = list(self.canaries)
        self.evidence.leases = list(self.leases)
        figures = self.run.result.figures
        for (table, kind), value in sorted(counted.items()):
            figures[f"poison_items_{table}_{kind}"] = value
        # Not judged (a unit that raises is contained by design), but worth seeing in a report.
        for attrs, value in sorted(self.h.metric_totals("oab.loop.errors").items()):
            loop = dict(attrs).get("oab.loop", "?")
            figures[f"loop_errors_{loop}"] = figures.get(f"loop_errors_{loop}", 0.0) + value
        figures["error_log_lines"] = float(self.log_text().count('"level": "ERROR"'))

    # ----------------------------------------------------------------------- repair
    def repair(self) -> None:
        """The runbook's fix for each poisoned agent."""
        run, h = self.run, self.h
        for slot in h.slots:
            slot.proxy.clear()
        ddb, table = h.ddb, h.tables.state
        for item in self.backup.values():
            ddb.put_item(
                TableName=table,
                Item=item,
                ConditionExpression="attribute_type(audit_seq, :s)",
                ExpressionAttributeValues={":s": {"S": "S"}},
            )
        rows = self.queue_rows()
        for role in ("queue-row", "index-key", "status", "commit"):
            key = self.role(role)
            if rows.get(key, {}).get("state") == "parked":
                h.oabctl("queue", "retry", key)
            else:  # never parked (reported by its figure): nothing to retry
                h.note("not retried", key=key, state=rows.get(key, {}).get("state"))
        run.apply([self.role(r) for r in ("alias-bomb", "identity", *NEW_ROLES)])
        h.s3.delete_object(Bucket=BUCKET, Key="manifests/chaos/x/stray.yaml")
        h.note("repaired")

    def shutdown(self) -> None:
        """SIGTERM every replica still running; each must exit 0 (a dead loop exits 70), and
        none may have ended before."""
        h = self.h
        died: dict[str, int | None] = {}
        stopped: list[int] = []
        for slot in h.slots:
            for rid in slot.ids[:-1]:
                died[rid] = None  # an earlier incarnation (this scenario restarts nothing)
            if slot.alive:
                h.signal(slot.index, signal.SIGTERM)
                stopped.append(slot.index)
            elif slot.process is not None:
                died[slot.replica_id] = slot.process.poll()
        self.evidence.died = died
        self.evidence.exits = {h.slots[i].replica_id: h.wait_exit(i, 30) for i in stopped}


def parked_reason(row: dict[str, Any]) -> str:
    """The reason of a parked row as an operator reads it: the leading word of its last error
    (``CorruptRow: ...``), or ``InvalidManifest`` for the error a manifest that cannot be read
    gives (``manifests/...: the stored object cannot be read: ...``)."""
    error = str(row.get("last_error") or "")
    head = error.split(":", 1)[0]
    if head.isidentifier() and head[:1].isupper():
        return head
    if "the stored object cannot be read" in error:
        return "InvalidManifest"
    return error[:80] or "Parked"


def shown_reason(doc: dict[str, Any]) -> str:
    """Every reason ``oabctl get -o json`` shows for one agent: its work unit's error, its
    status's reason (an unreadable status) and its conditions' reasons."""
    parts: list[str] = []
    work = doc.get("workUnit") or {}
    if work:
        parts.append(f"work {work.get('state')}: {work.get('lastError') or ''}")
    status = doc.get("status") or {}
    if status.get("reason"):
        parts.append(f"status {status.get('phase')}: {status['reason']}")
    for c in status.get("conditions") or []:
        if c.get("reason"):
            parts.append(f"{c.get('type')}={c.get('status')}: {c['reason']}")
    return "; ".join(parts)
