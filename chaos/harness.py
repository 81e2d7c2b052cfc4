"""The chaos harness: one serialized emulator, N replica processes, one fault proxy per replica.

Design
------
- The emulator runs with the simulated ECS data plane (``localaws.start(dataplane=True)``); the
  runner itself talks to it directly (set-up, ``oabctl apply``, observation), never through a
  proxy, so observation cannot be disturbed by the faults it measures.
- Replica *slot* ``i`` owns proxy ``p{i}`` for its whole life; every incarnation of the slot (a
  restart after a kill) reaches AWS through it with ``--endpoint http://127.0.0.1:{proxy}``.
  Each incarnation gets a fresh replica id ``r{i}-{n}`` (identities are per process
  incarnation, see ``oab.leader.config``), and its structured log goes to
  ``{workdir}/logs/r{i}-{n}.log``.
- With ``metrics=True`` each replica also exports its OpenTelemetry metrics every
  :data:`METRIC_EXPORT_MS` through the SDK's console exporter (``OTEL_METRICS_EXPORTER=console``)
  to its own stdout file ``{workdir}/logs/r{i}-{n}.metrics`` (a stream of JSON documents, the
  last of which holds the process's cumulative totals; the daemon flushes once more at a
  graceful exit). :meth:`Harness.metric_totals` sums a counter over every incarnation: that is
  how a scenario reads e.g. ``oab.poison.items`` from real replica processes.
- Process faults are plain signals to the replica's process: SIGKILL, SIGSTOP/SIGCONT, SIGTERM.
  Time faults are the daemon's chaos settings (``OAB_CHAOS=1``, ``OAB_CHAOS_CLOCK_OFFSET_S``,
  ``OAB_CHAOS_CLOCK_RATE``) given at (re)start.
- The leader is read from the lease item (consistent read) by the runner.

This duplicates a little of ``controller/local/cluster.py`` (a general multi-replica harness) on
purpose: chaos needs a per-replica endpoint (the proxy), per-incarnation clock settings and raw
signals, and must keep its observation path apart from the replicas' network.

Time model: the runner's ``time.monotonic()`` stamps every fault and every proxy event, so all
durations in the report are on one clock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from faultproxy import FaultProxy, ProxyLoop

from oab.controller.base.names import TableNames
from oab.controller.cli import main as cli
from oab.controller.local.dataplane import DataPlaneControl
from oab.controller.local.emulator import LocalAWS, start
from oab.leader.record import LeaseRecord, decode_item, lease_key

BUCKET = "oab-chaos-plane"
CLUSTER = "oab"
#: Metric export period of the replicas when a harness reads their metrics (milliseconds).
METRIC_EXPORT_MS = 5000


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Replica timing used for a run (the daemon's settings of the same names)."""

    lease_duration_s: float = 6.0
    renew_deadline_s: float = 4.0
    retry_period_s: float = 1.0
    claim_visibility_s: float = 10.0
    workers: int = 2
    #: The daemon's full-resync period; ``None`` keeps its default (300 s).
    resync_period_s: float | None = None

    @property
    def call_timeout_s(self) -> float:
        """The lease call timeout the replica derives (``min(1, renew / 2)``)."""
        return min(1.0, self.renew_deadline_s / 2)

    @property
    def crash_failover_bound_s(self) -> float:
        """``lease + retry + call timeout`` (``ElectionConfig.crash_failover_bound``)."""
        return self.lease_duration_s + self.retry_period_s + self.call_timeout_s


@dataclass
class Slot:
    """One replica slot: its proxy and its current process incarnation."""

    index: int
    proxy: FaultProxy
    incarnation: int = 0
    process: subprocess.Popen[bytes] | None = None
    replica_id: str = ""
    log_path: Path | None = None
    ids: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        """The current process exists and has not exited."""
        return self.process is not None and self.process.poll() is None


class Harness:
    """Emulator + proxies + replica processes for one scenario run (a context manager)."""

    def __init__(
        self,
        workdir: Path,
        *,
        replicas: int = 3,
        timing: Timing | None = None,
        seed: int = 0,
        metrics: bool = False,
    ) -> None:
        self.workdir = workdir
        self.metrics = metrics
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.n = replicas
        self.timing = timing or Timing()
        self.seed = seed
        self.tables = TableNames()
        self.emulator: LocalAWS | None = None
        self.loop: ProxyLoop | None = None
        self.slots: list[Slot] = []
        self.faults: list[dict[str, Any]] = []  # (time, what) log for the report
        self.t0 = time.monotonic()
        self._cli_env: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Harness:
        self.emulator = start(dataplane=True)
        self.emulator.apply_env()
        self.dataplane = DataPlaneControl(self.emulator.endpoint)
        self.dataplane.configure(start_delay_s=0.5, tick_s=0.2)
        self._cli_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OAB_")},
            **self.emulator.env(),
            "OABCTL_CONFIG": os.devnull,
            "OAB_BUCKET": BUCKET,
            "OAB_CLUSTER": CLUSTER,
        }
        self.oabctl("init")
        session = boto3.Session(region_name="us-east-1")
        self.ddb = session.client("dynamodb", endpoint_url=self.emulator.endpoint)
        self.ecs = session.client("ecs", endpoint_url=self.emulator.endpoint)
        self.s3 = session.client("s3", endpoint_url=self.emulator.endpoint)
        self.ssm = session.client("ssm", endpoint_url=self.emulator.endpoint)
        self.loop = ProxyLoop()
        upstream = ("127.0.0.1", self.emulator.port)
        for i in range(self.n):
            proxy = self.loop.proxy(f"p{i}", upstream=upstream, seed=self.seed * 1000 + i)
            self.slots.append(Slot(index=i, proxy=proxy))
        return self

    def __exit__(self, *_exc: object) -> None:
        for slot in self.slots:
            self._end(slot)
        if self.loop is not None:
            for slot in self.slots:
                slot.proxy.stop()
            self.loop.close()
        if self.emulator is not None:
            self.emulator.stop()

    def oabctl(self, *argv: str, stdin: str | None = None) -> str:
        """Run an ``oabctl`` command in-process against the emulator; raises on failure."""
        code, out, err = self.oabctl_result(*argv, stdin=stdin)
        if code != 0:
            raise RuntimeError(f"oabctl {' '.join(argv)} failed ({code}): {err[-2000:]}")
        return out

    def oabctl_result(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        """Run an ``oabctl`` command in-process: (exit status, stdout, stderr)."""
        import io

        out, err = io.StringIO(), io.StringIO()
        code = cli.main(
            list(argv),
            stdout=out,
            stderr=err,
            stdin=io.StringIO(stdin or ""),
            env=self._cli_env,
        )
        return code, out.getvalue(), err.getvalue()

    def apply_text(self, text: str) -> None:
        """``oabctl apply -f FILE`` of a (multi-document) manifest text."""
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.workdir, delete=False) as fh:
            fh.write(text)
        self.oabctl("apply", "-f", fh.name)

    # -------------------------------------------------------------------- replicas
    def start_replica(
        self, index: int, *, clock_offset_s: float = 0.0, clock_rate: float = 1.0
    ) -> Slot:
        """Start a new incarnation in slot ``index`` (the previous one must be gone)."""
        slot = self.slots[index]
        if slot.alive:
            raise RuntimeError(f"slot {index} still runs {slot.replica_id}")
        slot.incarnation += 1
        slot.replica_id = f"r{index}-{slot.incarnation}"
        slot.ids.append(slot.replica_id)
        slot.log_path = self.logs / f"{slot.replica_id}.log"
        t = self.timing
        assert self.emulator is not None
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OAB_")},
            **self.emulator.env(),
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{slot.proxy.port}",
            "OAB_CHAOS": "1",
            "OAB_EXIT_WITH_PARENT": str(os.getpid()),  # never outlive the harness, even if killed
            "OAB_CHAOS_CLOCK_OFFSET_S": str(clock_offset_s),
            "OAB_CHAOS_CLOCK_RATE": str(clock_rate),
            "OAB_CONTROLLER_CONFIG": "",
        }
        if self.metrics:
            env |= {
                "OTEL_METRICS_EXPORTER": "console",
                "OTEL_METRIC_EXPORT_INTERVAL": str(METRIC_EXPORT_MS),
            }
        argv = [
            sys.executable,
            "-m",
            "oab.controller.runtime.daemon",
            "run",
            "--replica-id",
            slot.replica_id,
            "--endpoint",
            f"http://127.0.0.1:{slot.proxy.port}",
            "--bucket",
            BUCKET,
            "--cluster",
            CLUSTER,
            "--workers",
            str(t.workers),
            "--lease-duration",
            str(t.lease_duration_s),
            "--renew-deadline",
            str(t.renew_deadline_s),
            "--retry-period",
            str(t.retry_period_s),
            "--claim-visibility",
            str(t.claim_visibility_s),
            "--backoff-base",
            "0.5",
            "--backoff-cap",
            "5",
            "--shutdown-timeout",
            "8",
        ]
        if t.resync_period_s is not None:
            argv += ["--resync-period", str(t.resync_period_s)]
        log = slot.log_path.open("ab")
        # The console metric exporter writes multi-line JSON to stdout: keep it out of the log.
        out = slot.log_path.with_suffix(".metrics").open("ab") if self.metrics else log
        slot.process = subprocess.Popen(
            argv, stdout=out, stderr=log, env=env, start_new_session=True
        )
        log.close()
        out.close()
        self.note(
            "start", slot=index, replica=slot.replica_id, offset=clock_offset_s, rate=clock_rate
        )
        return slot

    def start_all(self) -> None:
        """Start every slot."""
        for i in range(self.n):
            self.start_replica(i)

    def signal(self, index: int, sig: signal.Signals) -> None:
        """Send ``sig`` to slot ``index``'s process."""
        slot = self.slots[index]
        if slot.process is None:
            raise RuntimeError(f"slot {index} has no process")
        self.note(sig.name, slot=index, replica=slot.replica_id)
        slot.process.send_signal(sig)

    def wait_exit(self, index: int, timeout: float) -> int | None:
        """Wait for slot ``index``'s process to exit; its status, or None on timeout."""
        slot = self.slots[index]
        if slot.process is None:
            return None
        try:
            return slot.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _end(self, slot: Slot) -> None:
        if slot.process is None or slot.process.poll() is not None:
            return
        slot.process.send_signal(signal.SIGCONT)
        slot.process.send_signal(signal.SIGKILL)
        slot.process.wait(timeout=10)

    def slot_of(self, replica_id: str) -> int | None:
        """The slot a replica id (or worker id ``rI-N/thread``) belongs to."""
        rid = replica_id.split("/", 1)[0]
        for slot in self.slots:
            if rid in slot.ids:
                return slot.index
        return None

    # ------------------------------------------------------------------- observing
    def now(self) -> float:
        """Seconds on the run's clock."""
        return time.monotonic()

    def note(self, what: str, **data: Any) -> float:
        """Record a fault or action at the current time; returns that time."""
        t = self.now()
        self.faults.append({"t": round(t - self.t0, 3), "what": what, **data})
        return t

    def metric_totals(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Counter ``name`` summed over every replica incarnation, per attribute set (sorted
        ``(attribute, value)`` pairs). Each incarnation's last export holds its cumulative
        totals; an incarnation killed before its first export counts nothing."""
        totals: dict[tuple[tuple[str, str], ...], float] = {}
        for path in sorted(self.logs.glob("*.metrics")):
            last: dict[tuple[tuple[str, str], ...], float] = {}
            for doc in _json_documents(path.read_text(errors="replace")):
                points = _points(doc, name)
                if points:
                    last = points
            for attrs, value in last.items():
                totals[attrs] = totals.get(attrs, 0.0) + value
        return totals

    def lease(self) -> LeaseRecord | None:
        """The lease item, read directly from the emulator."""
        resp = self.ddb.get_item(
            TableName=self.tables.lease, Key=lease_key("controller"), ConsistentRead=True
        )
        item = resp.get("Item")
        if not item:
            return None
        # A garbage item (the poison scenario plants one) is nobody's lease until replaced.
        record = decode_item(item, name="controller")
        return record if isinstance(record, LeaseRecord) else None

    def leader_slot(self) -> int | None:
        """The slot whose replica holds the lease, if any."""
        rec = self.lease()
        if rec is None or rec.holder is None:
            return None
        return self.slot_of(rec.holder)


def _json_documents(text: str) -> list[Any]:
    """The JSON documents of a concatenated stream (a torn last one is dropped)."""
    decoder = json.JSONDecoder()
    out: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        try:
            doc, i = decoder.raw_decode(text, i)
        except ValueError:
            return out
        out.append(doc)


def _points(doc: Any, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Data points of metric ``name`` in one exported ``MetricsData`` document."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    if not isinstance(doc, dict):
        return out
    for rm in doc.get("resource_metrics") or []:
        for sm in rm.get("scope_metrics") or []:
            for metric in sm.get("metrics") or []:
                if metric.get("name") != name:
                    continue
                for point in (metric.get("data") or {}).get("data_points") or []:
                    attrs = tuple(
                        sorted((str(k), str(v)) for k, v in (point.get("attributes") or {}).items())
                    )
                    out[attrs] = out.get(attrs, 0.0) + float(point.get("value", 0))
    return out
