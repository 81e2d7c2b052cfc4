"""Chaos scenarios: each starts a fresh harness, injects its faults, waits for recovery, checks.

Design
------
Every run is independent: a fresh emulator, fresh replica processes, ``agents`` agents applied and
observed at generation 1 before any fault, then the scenario's faults while a change (generation
2, a new image tag) is in flight, then recovery, then the invariant checker over the whole run's
evidence. All random choices come from ``random.Random(seed)``, so ``--seed`` repeats a run's
choices (not the operating system's scheduling).

Measured per run: failover time (fault -> the next lease acquisition acknowledged, from the proxy
events), time without a leader (the old leader stopped acting -> a new one acquired), and recovery
time (end of the fault -> every agent observed at its last generation).

Time model: the runner's monotonic clock only (see :mod:`harness`).
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import poison as poison_scenario
from faultproxy import Action, Event, Fault
from harness import BUCKET, CLUSTER, Harness, Timing
from invariants import (
    AUDIT_CALLS_BYTES,
    Checker,
    PoisonEvidence,
    Violation,
    acquisitions,
    active_revisions,
    active_services,
    audit_text,
    bucket_texts,
    lease_history,
    read_audit,
    read_statuses,
)

#: Status attributes a convergence poll reads (``key`` is a DynamoDB reserved word: aliased).
PROGRESS_FIELDS = ("key", "phase", "observed_generation", "last_error")

MANIFEST = """\
apiVersion: oab.dev/v1
kind: OABService
metadata:
  name: {name}
  namespace: chaos
spec:
  cpu: 256
  memory: 512
{bootstrap}  taskDefinition:
    image: ghcr.io/openabdev/openab:v{gen}
  secrets:
    - name: DISCORD_BOT_TOKEN
      source: ssm
      path: /oab/chaos/{name}/discord-token
      autoRestart: true
  config:
    agent:
      preset: kiro
    discord:
      bot_token: ${{DISCORD_BOT_TOKEN}}
      allowed_channels: ["123456789012345678"]
"""


@dataclass
class RunResult:
    """What one run of one scenario measured and found."""

    scenario: str
    iteration: int
    seed: int
    agents: int
    violations: list[Violation] = field(default_factory=list)
    failover_s: list[float] = field(default_factory=list)
    leaderless_s: list[float] = field(default_factory=list)
    recovery_s: list[float] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    duration_s: float = 0.0
    #: Figures that must be > 0 for the run to have tested its guard (e.g. a zombie write was
    #: attempted and the fence rejected it); a run where one is not is ``invalid``, not green.
    required: tuple[str, ...] = ()

    @property
    def unexercised(self) -> list[str]:
        """The required figures that stayed at 0 (or were never measured)."""
        return [name for name in self.required if self.figures.get(name, 0.0) <= 0]

    @property
    def status(self) -> str:
        """``violated``, ``error``, ``invalid`` (the guard under test was never exercised) or
        ``ok``, in that order of precedence."""
        if self.violations:
            return "violated"
        if self.error:
            return "error"
        return "invalid" if self.unexercised else "ok"

    def to_json(self) -> dict[str, Any]:
        """Plain form for the report."""
        return {
            "iteration": self.iteration,
            "seed": self.seed,
            "agents": self.agents,
            "violations": [v.to_json() for v in self.violations],
            "failover_s": [round(x, 3) for x in self.failover_s],
            "leaderless_s": [round(x, 3) for x in self.leaderless_s],
            "recovery_s": [round(x, 3) for x in self.recovery_s],
            "figures": {k: round(v, 3) for k, v in self.figures.items()},
            "faults": self.faults,
            "error": self.error,
            "status": self.status,
            "unexercised": self.unexercised,
            "duration_s": round(self.duration_s, 1),
        }


class Run:
    """One scenario run: the harness plus the agents' expected generations."""

    def __init__(self, h: Harness, rng: random.Random, result: RunResult) -> None:
        self.h = h
        self.rng = rng
        self.result = result
        self.keys = [f"chaos/a{i:04d}" for i in range(result.agents)]
        self.gen: dict[str, int] = {}
        self.gens_applied: dict[str, set[int]] = {}
        self.planted: list[str] = []
        #: Agents whose manifest has ``bootstrapFrom`` (so their runs ingest snapshot records).
        self.bootstrap: set[str] = set()
        #: Scenario roles (``poison``): role -> agent key.
        self.roles: dict[str, str] = {}
        #: What a bad-data scenario observed (checked by the ``loops``, ``lease`` and ``poison``
        #: invariants); ``None`` for the other scenarios.
        self.poison: PoisonEvidence | None = None

    # ------------------------------------------------------------------ workload
    def plant_secrets(self, keys: list[str] | None = None) -> None:
        """One SecureString per agent (``keys``, default all) with a value that must never
        leak."""
        for key in self.keys if keys is None else keys:
            name = key.split("/", 1)[1]
            value = f"planted-{self.rng.getrandbits(64):016x}"
            self.planted.append(value)
            self.h.ssm.put_parameter(
                Name=f"/oab/chaos/{name}/discord-token",
                Value=value,
                Type="SecureString",
                Overwrite=True,
            )
        for slot in self.h.slots:
            slot.proxy.set_planted(v.encode() for v in self.planted)

    def apply(self, keys: list[str]) -> float:
        """Bump ``keys`` to their next generation in one ``oabctl apply``; returns the time."""
        docs = []
        for key in keys:
            gen = self.gen.get(key, 0) + 1
            self.gen[key] = gen
            self.gens_applied.setdefault(key, set()).add(gen)
            name = key.split("/", 1)[1]
            bootstrap = (
                f"  bootstrapFrom: s3://oab-chaos-agent-state/{key}/home.tar.gz\n"
                if key in self.bootstrap
                else ""
            )
            docs.append(MANIFEST.format(name=name, gen=gen, bootstrap=bootstrap))
        self.h.apply_text("---\n".join(docs))
        return self.h.note("apply", agents=len(keys))

    def converged(self, *, running: bool = False) -> bool:
        """Every agent observed (Running) at its last generation, or failed terminally
        (``running``: Running only, for a wait after a repair of agents that had failed)."""
        statuses, _ = read_statuses(self.h.ddb, self.h.tables.state, fields=PROGRESS_FIELDS)
        for key, gen in self.gen.items():
            s = statuses.get(key)
            if s is None:
                return False
            observed = s.phase == "Running" and s.observed_generation == gen
            if not observed and (running or not (s.phase == "Failed" and s.last_error)):
                return False
        return True

    def wait_converged(
        self, *, since: float, timeout: float, running: bool = False
    ) -> float | None:
        """Seconds from ``since`` until converged, or ``None`` (recorded) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.converged(running=running):
                took = time.monotonic() - since
                self.result.recovery_s.append(took)
                return took
            # Each poll scans every status item through the one serialized emulator the replicas
            # also need: poll less often as the fleet grows (2.5 s at 1,000 agents).
            time.sleep(max(0.5, len(self.keys) / 400))
        self.result.error = f"not converged within {timeout:.0f} s"
        return None

    def start(self, *, skew: dict[int, tuple[float, float]]) -> None:
        """Plant secrets, start every replica (``skew``: slot -> (offset, rate)), apply gen 1."""
        self.plant_secrets()
        for i in range(self.h.n):
            offset, rate = skew.get(i, (0.0, 1.0))
            self.h.start_replica(i, clock_offset_s=offset, clock_rate=rate)
        t = self.apply(self.keys)
        self.wait_leader(timeout=30)
        took = self.wait_converged(since=t, timeout=90.0 + len(self.keys) * 3.0)
        if took is None:
            raise RuntimeError("initial apply did not converge")
        self.result.figures["initial_converge_s"] = took
        self.result.recovery_s.clear()

    def wait_leader(self, *, timeout: float, other_than: int | None = None) -> int:
        """Wait until a slot (other than ``other_than``) holds the lease."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            slot = self.h.leader_slot()
            if slot is not None and slot != other_than:
                return slot
            time.sleep(0.1)
        raise RuntimeError(f"no leader within {timeout:.0f} s")

    # ------------------------------------------------------------------ measuring
    def events(self) -> list[Event]:
        """Every proxy event of the run so far."""
        return [e for slot in self.h.slots for e in slot.proxy.events()]

    def current_epoch(self) -> int:
        """The lease's epoch now."""
        rec = self.h.lease()
        return int(rec.epoch) if rec else 0

    def failover(self, *, t_fault: float, old_epoch: int, t_stopped: float | None = None) -> None:
        """Record failover (fault -> next acquisition) and leaderless time, from proxy events."""
        acq = [
            a
            for a in acquisitions(lease_history(self.events(), self.h.tables.lease))
            if a.epoch > old_epoch
        ]
        if not acq:
            self.result.violations.append(
                Violation("failover", f"no acquisition after epoch {old_epoch}")
            )
            return
        first = acq[0]
        self.result.failover_s.append(first.t_done - t_fault)
        self.result.leaderless_s.append(first.t_done - (t_stopped or t_fault))
        bound = self.h.timing.crash_failover_bound_s
        # Measured from the fault, not from the last renewal, a crash may take up to one retry
        # period longer than the bound (the renewal before the crash was up to that old).
        if first.t_done - t_fault > bound + 0.5:
            self.result.figures["over_bound"] = self.result.figures.get("over_bound", 0) + 1

    # ------------------------------------------------------------------ checking
    def check(self) -> None:
        """Run the invariant checker over the whole run."""
        h = self.h
        slot_of = {rid: slot.proxy.name for slot in h.slots for rid in slot.ids}
        events = self.events()
        checker = Checker(
            events=events,
            tables=h.tables,
            slot_of=slot_of,
            agents=self.gen,
            planted=self.planted,
        )
        audit = read_audit(h.ddb, h.tables.runlog, self.gen)
        statuses, raw = read_statuses(h.ddb, h.tables.state)
        checker.check_stale_epoch(audit)
        checker.check_claims(audit)
        checker.check_observed(statuses)
        checker.check_ecs(
            audit,
            services=active_services(h.ecs, CLUSTER),
            active_revisions=active_revisions(h.ecs),
            generations_applied=self.gens_applied,
        )
        checker.check_audit(audit, statuses)
        blobs = {"audit log": audit_text(audit), "status items": repr(raw)}
        blobs.update(bucket_texts(h.s3, BUCKET))
        checker.check_secrets(blobs, sorted(h.logs.glob("*.log")))
        if self.poison is not None:
            self.check_poison(checker, audit_log=blobs["audit log"], statuses=blobs["status items"])
        self.result.violations += checker.violations
        self.result.figures["ecs_calls_attributed_to_their_claim"] = float(checker.attributed)
        self.result.figures["requests"] = float(len(events))
        self.result.figures["faulted_requests"] = float(sum(1 for e in events if e.fault))

    def check_poison(self, checker: Checker, *, audit_log: str, statuses: str) -> None:
        """The bad-data invariants (``loops``, ``lease``, ``poison``) over this run."""
        h, ev = self.h, self.poison
        assert ev is not None
        logs = sorted(h.logs.glob("*.log"))
        checker.check_loops(ev.exits, logs, died=ev.died)
        took = checker.check_lease(
            ev.leases, retry_s=h.timing.retry_period_s, call_timeout_s=h.timing.call_timeout_s
        )
        self.result.figures["epoch_reused"] = took.pop("epoch_reused", 0.0)
        for what, seconds in took.items():
            self.result.figures[f"leader_after_{what.replace('-', '_')}_s"] = seconds
        sizes: dict[str, int] = {}
        for key in self.gen:
            resp = h.ddb.query(
                TableName=h.tables.runlog,
                KeyConditionExpression="pk = :k",
                ExpressionAttributeValues={":k": {"S": key}},
            )
            calls = [len(str(i.get("calls", {}).get("S", "")).encode()) for i in resp["Items"]]
            sizes[key] = max(calls, default=0)
        ev.audit_calls_bytes = sizes
        self.result.figures["audit_calls_max_bytes"] = float(max(sizes.values(), default=0))
        self.result.figures["audit_calls_budget_bytes"] = float(AUDIT_CALLS_BYTES)
        queue = h.ddb.scan(TableName=h.tables.queue, ConsistentRead=True)["Items"]
        texts = {"audit log": audit_log, "status items": statuses, "queue rows": repr(queue)}
        texts |= {f"replica log {p.name}": p.read_text(errors="replace") for p in logs}
        checker.check_poison(ev, texts)


# -------------------------------------------------------------------------------- scenarios
def _changes(run: Run) -> float:
    return run.apply(run.keys)


def leader_killed(run: Run) -> None:
    """SIGKILL the leader while a change is being reconciled; restart it later."""
    h = run.h
    leader = run.wait_leader(timeout=30)
    epoch = run.current_epoch()
    _changes(run)
    time.sleep(run.rng.uniform(0.2, 1.5))  # mid-reconcile
    t = h.note("fault", kind="SIGKILL leader", slot=leader)
    h.signal(leader, signal.SIGKILL)
    h.wait_exit(leader, 10)
    run.wait_leader(timeout=30, other_than=leader)
    run.failover(t_fault=t, old_epoch=epoch)
    h.start_replica(leader)
    run.wait_converged(since=t, timeout=90)


def zombie_leader(run: Run) -> None:
    """A fenced write of the leader is held in flight past its lease while the leader is paused
    (SIGSTOP) and another takes over; the write then arrives and must be refused by the fence.

    Pausing alone proves little: a resumed leader usually notices its lost lease before writing
    anything (a seed-7 run attempted no zombie write at all). So the leader's proxy holds its
    fenced ``TransactWriteItems`` (a ``delay`` longer than the failover) from just before the
    pause: the enqueue the change below provokes reaches DynamoDB only after a newer epoch was
    acknowledged, a genuine stale-epoch write. The run is invalid unless at least one such write
    was attempted and rejected (``required``).
    """
    h = run.h
    leader = run.wait_leader(timeout=30)
    epoch = run.current_epoch()
    zombie_id = h.slots[leader].replica_id
    proxy = h.slots[leader].proxy
    hold = h.timing.crash_failover_bound_s + h.timing.lease_duration_s
    proxy.set_faults(
        [Fault(action="delay", service="dynamodb", op="TransactWriteItems", delay_s=hold)]
    )
    _changes(run)

    def held() -> bool:
        return any(
            e.t_fwd is None
            and any(int(f.get("epoch") or 0) == epoch for f in e.info.get("fences", []))
            for e in proxy.events()
        )

    deadline = time.monotonic() + 15
    while not held() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(run.rng.uniform(0.0, 0.3))
    t = h.note("fault", kind="SIGSTOP leader", slot=leader, held_write=held())
    h.signal(leader, signal.SIGSTOP)
    proxy.clear()  # writes already held stay held for their delay; new ones pass
    run.wait_leader(timeout=30, other_than=leader)
    time.sleep(h.timing.lease_duration_s)  # stay paused well past the lease
    t_resume = h.note("fault-end", kind="SIGCONT", slot=leader)
    h.signal(leader, signal.SIGCONT)
    run.failover(t_fault=t, old_epoch=epoch)
    run.wait_converged(since=t_resume, timeout=90)
    time.sleep(2.0)
    # The held writes reach DynamoDB only when their delay ends: count them once answered.
    answered_by = time.monotonic() + hold + 10
    while time.monotonic() < answered_by and any(
        e.status is None and e.fault == "delay" and e.error == "" for e in proxy.events()
    ):
        time.sleep(0.1)
    newer = [
        a.t_done
        for a in acquisitions(lease_history(run.events(), h.tables.lease))
        if a.epoch > epoch
    ]
    accepted = 0
    attempted = 0
    rejected = 0
    for e in run.events():
        # A zombie write: the deposed leader's, with its old epoch, sent after a newer epoch
        # was acknowledged.
        if not newer or e.proxy != proxy.name or e.t_fwd is None or e.t_fwd < newer[0]:
            continue
        old_lease = any(
            p.get("holder") == zombie_id and int(p.get("epoch", 0)) == epoch
            for p in e.info.get("puts", [])
            if p.get("table") == h.tables.lease
        )
        old_fence = any(int(f.get("epoch") or 0) == epoch for f in e.info.get("fences", []))
        if old_lease or old_fence:
            attempted += 1
            if e.ok:
                accepted += 1
                run.result.violations.append(
                    Violation("zombie", f"zombie {zombie_id} {e.op} with epoch {epoch} accepted")
                )
            elif _fence_failed(e, epoch):
                rejected += 1
    run.result.figures["zombie_writes_attempted"] = float(attempted)
    run.result.figures["zombie_writes_accepted"] = float(accepted)
    run.result.figures["fence_rejections"] = float(rejected)


def _fence_failed(e: Event, epoch: int) -> bool:
    """Whether ``e`` is a transaction the emulator cancelled on its ``epoch`` fence item."""
    codes = e.info.get("cancellation", [])
    return any(
        int(f.get("epoch") or 0) == epoch
        and 0 <= int(f.get("index", -1)) < len(codes)
        and codes[int(f["index"])] == "ConditionalCheckFailed"
        for f in e.info.get("fences", [])
    )


def dynamodb_cut(run: Run) -> None:
    """Blackhole the leader's DynamoDB traffic (ECS stays reachable); it must stop acting."""
    h = run.h
    leader = run.wait_leader(timeout=30)
    epoch = run.current_epoch()
    _changes(run)
    time.sleep(run.rng.uniform(0.1, 0.8))
    proxy = h.slots[leader].proxy
    t = h.note("fault", kind="blackhole dynamodb", slot=leader)
    proxy.set_faults([Fault(action="blackhole", service="dynamodb")])
    run.wait_leader(timeout=30, other_than=leader)
    time.sleep(max(h.timing.claim_visibility_s, h.timing.lease_duration_s) + 1)
    t_end = h.note("fault-end", kind="clear", slot=leader)
    proxy.clear()
    renews = [
        w
        for w in lease_history(run.events(), h.tables.lease)
        if w.slot == proxy.name and w.epoch == epoch and w.t_done <= t
    ]
    stopped = (renews[-1].t_fwd if renews else t) + h.timing.renew_deadline_s
    run.failover(t_fault=t, old_epoch=epoch, t_stopped=stopped)
    late = [
        e
        for e in run.events()
        if e.proxy == proxy.name and e.ok and e.info.get("mutation") and (e.t_fwd or 0) > stopped
    ]
    bound = t + max(h.timing.renew_deadline_s, h.timing.claim_visibility_s)
    for e in late:
        if (e.t_fwd or 0) > bound:
            run.result.violations.append(
                Violation(
                    "cut-off", f"{e.op} by the cut-off replica {(e.t_fwd or 0) - t:.1f} s after"
                )
            )
    run.result.figures["ecs_mutations_after_renew_deadline"] = float(len(late))
    run.wait_converged(since=t_end, timeout=90)


def worker_killed(run: Run) -> None:
    """SIGKILL a replica while one of its workers holds a claim."""
    h = run.h
    _changes(run)
    deadline = time.monotonic() + 20
    victim: int | None = None
    while time.monotonic() < deadline and victim is None:
        for item in h.ddb.scan(TableName=h.tables.queue, ConsistentRead=True)["Items"]:
            if item.get("state", {}).get("S") == "in_flight":
                victim = h.slot_of(item["owner"]["S"])
                break
        time.sleep(0.05)
    if victim is None:
        raise RuntimeError("no claim in flight to kill")
    epoch = run.current_epoch()
    was_leader = h.leader_slot() == victim
    t = h.note("fault", kind="SIGKILL worker", slot=victim, leader=was_leader)
    h.signal(victim, signal.SIGKILL)
    h.wait_exit(victim, 10)
    if was_leader:
        run.wait_leader(timeout=30, other_than=victim)
        run.failover(t_fault=t, old_epoch=epoch)
    h.start_replica(victim)
    run.wait_converged(since=t, timeout=90)


def rolling_restart(run: Run) -> None:
    """SIGTERM every replica one by one (graceful handoff), restarting each before the next."""
    h = run.h
    t0 = h.now()
    for i in range(h.n):
        if i == 1:
            _changes(run)
        epoch = run.current_epoch()
        was_leader = h.leader_slot() == i
        t = h.note("fault", kind="SIGTERM", slot=i, leader=was_leader)
        h.signal(i, signal.SIGTERM)
        code = h.wait_exit(i, 20)
        if code != 0:
            run.result.violations.append(
                Violation("graceful", f"slot {i} exited {code} on SIGTERM")
            )
        if was_leader:
            run.wait_leader(timeout=30, other_than=i)
            run.failover(t_fault=t, old_epoch=epoch)
            run.result.figures["graceful_handoff_s"] = run.result.failover_s[-1]
        h.start_replica(i)
        time.sleep(2.0)
    run.wait_converged(since=t0, timeout=90)


def flapping_network(run: Run) -> None:
    """For 20 s, toggle drops, resets and short blackholes on random replicas."""
    h = run.h
    t = h.note("fault", kind="flapping")
    _changes(run)
    end = time.monotonic() + 20
    actions: tuple[Action, ...] = ("drop", "reset", "blackhole", "delay")
    while time.monotonic() < end:
        slot = h.slots[run.rng.randrange(h.n)]
        action = run.rng.choice(actions)
        fault = Fault(action=action, probability=0.4 if action != "blackhole" else 1.0, delay_s=0.8)
        slot.proxy.set_faults([fault])
        h.note("flap", slot=slot.index, action=action)
        time.sleep(run.rng.uniform(0.5, 2.0))
        slot.proxy.clear()
    t_end = h.note("fault-end", kind="flapping")
    run.result.figures["flap_s"] = t_end - t
    run.wait_converged(since=t_end, timeout=120)


def _storm(run: Run, faults: list[Fault], kind: str, seconds: float = 12.0) -> None:
    h = run.h
    t = h.note("fault", kind=kind)
    for slot in h.slots:
        slot.proxy.set_faults(faults)
    _changes(run)
    time.sleep(seconds)
    for slot in h.slots:
        slot.proxy.clear()
    t_end = h.note("fault-end", kind=kind)
    run.result.figures["storm_s"] = t_end - t
    run.wait_converged(since=t_end, timeout=120)


def dynamodb_throttling(run: Run) -> None:
    """Every replica's DynamoDB calls throttled (about 60 % of them) for 12 s."""
    _storm(
        run,
        [
            Fault(
                action="http",
                service="dynamodb",
                probability=0.35,
                status=400,
                code="ProvisionedThroughputExceededException",
            ),
            Fault(
                action="http",
                service="dynamodb",
                probability=0.4,
                status=400,
                code="ThrottlingException",
            ),
        ],
        "dynamodb throttling storm",
    )


def ecs_errors(run: Run) -> None:
    """Every replica's ECS calls fail (5xx or throttling, about 60 %) for 12 s."""
    _storm(
        run,
        [
            Fault(
                action="http", service="ecs", probability=0.3, status=500, code="ServerException"
            ),
            Fault(
                action="http",
                service="ecs",
                probability=0.4,
                status=400,
                code="ThrottlingException",
            ),
            Fault(
                action="http", service="ecs", probability=0.2, status=503, code="ServiceUnavailable"
            ),
        ],
        "ECS 5xx and throttling",
    )


def mass_change(run: Run) -> None:
    """Every agent changed in one apply; measures time to observe all of them."""
    t = _changes(run)
    took = run.wait_converged(since=t, timeout=120.0 + len(run.keys) * 3.0)
    if took is not None:
        run.result.figures["agents_per_s"] = len(run.keys) / took


def clock_offset(run: Run) -> None:
    """Replicas run with wall clocks +10 min and -10 min (set at start); kill the leader."""
    leader_killed(run)


def clock_rate(run: Run) -> None:
    """One replica's monotonic clock runs 2x fast (set at start); kill the leader."""
    leader_killed(run)


Scenario = Callable[[Run], None]

SCENARIOS: dict[str, tuple[Scenario, dict[str, Any]]] = {
    "leader-killed": (leader_killed, {}),
    "zombie-leader": (
        zombie_leader,
        {"required": ("zombie_writes_attempted", "fence_rejections")},
    ),
    "dynamodb-cut": (dynamodb_cut, {}),
    "worker-killed": (worker_killed, {}),
    "rolling-restart": (rolling_restart, {}),
    "flapping-network": (flapping_network, {}),
    "dynamodb-throttling": (dynamodb_throttling, {}),
    "ecs-errors": (ecs_errors, {}),
    "mass-change": (mass_change, {"mass": True}),
    "clock-offset": (clock_offset, {"skew": {0: (600.0, 1.0), 1: (-600.0, 1.0)}}),
    "clock-rate": (clock_rate, {"skew": {1: (0.0, 2.0)}}),
    "poison": (
        poison_scenario.poison,
        {
            "prepare": poison_scenario.prepare,
            "min_agents": poison_scenario.MIN_AGENTS,
            "metrics": True,
            "resync_period_s": poison_scenario.RESYNC_PERIOD_S,
            "required": poison_scenario.REQUIRED,
        },
    ),
}


def run_scenario(
    name: str,
    *,
    iteration: int,
    seed: int,
    workdir: Path,
    replicas: int,
    agents: int,
    mass_agents: int,
    timing: Timing,
) -> RunResult:
    """One run of scenario ``name`` in a fresh harness under ``workdir``."""
    fn, opts = SCENARIOS[name]
    n_agents = mass_agents if opts.get("mass") else max(agents, opts.get("min_agents", 0))
    if "resync_period_s" in opts:
        timing = replace(timing, resync_period_s=opts["resync_period_s"])
    result = RunResult(
        scenario=name,
        iteration=iteration,
        seed=seed,
        agents=n_agents,
        required=tuple(opts.get("required", ())),
    )
    rng = random.Random(f"{seed}:{name}:{iteration}")
    started = time.monotonic()
    with Harness(
        workdir, replicas=replicas, timing=timing, seed=seed, metrics=opts.get("metrics", False)
    ) as h:
        run = Run(h, rng, result)
        try:
            if "prepare" in opts:
                opts["prepare"](run)
            skew = {i: v for i, v in opts.get("skew", {}).items() if i < replicas}
            run.start(skew=skew)
            fn(run)
        except Exception as exc:  # a failed run is reported, never hidden
            result.error = f"{type(exc).__name__}: {exc}"
        try:
            run.check()
        except Exception as exc:
            result.error = (result.error + "; " if result.error else "") + f"check: {exc}"
        result.faults = [{**f, "t": f["t"]} for f in h.faults]
        events = run.events()
        with (workdir / "events.jsonl").open("w") as fh:
            for e in events:
                fh.write(json.dumps(e.to_json()) + "\n")
    result.duration_s = time.monotonic() - started
    return result
