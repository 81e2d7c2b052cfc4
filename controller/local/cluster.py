"""A local cluster of real ``oab-controller run`` replica processes, for e2e tests, chaos and demo.

Design
------
:class:`LocalCluster` starts N replica subprocesses (``python -m oab.controller.runtime.daemon
run``) against one emulator endpoint, each with a chosen replica id and the settings of one
:class:`ClusterConfig` (passed as flags and ``OAB_*`` variables, the daemon's own precedence).
It finds the leader by reading the lease (``oab.leader.status.describe``), and can SIGKILL,
gracefully stop (SIGTERM) or restart any replica. Each replica's stderr (its JSON log) goes to a
file of its own, so nothing can block on a full pipe and the logs survive the process for the
secret-leak checks.

Invariants
----------
- Every process started here is stopped by :meth:`LocalCluster.close` (also used by ``with``):
  SIGTERM first, SIGKILL after ``stop_timeout_s``. Replicas run in their own session so a Ctrl-C
  in the terminal reaches only the caller, which then closes the cluster.
- A replica id is used by at most one live process at a time (restart waits for the old one).
- The caller's ``OAB_*`` variables never leak into the replicas: only what the config says.

Time model: waits use ``time.monotonic`` deadlines (``oab.leader.testing.wait_until``);
lease ages shown by :class:`LeaderInfo` come from the stored wall-clock stamps (display only).

This module is local/testing tooling: product code never imports it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3

from oab.controller.base.names import TableNames
from oab.controller.local.emulator import LOCAL_ENV
from oab.leader.status import describe
from oab.leader.testing import wait_until

__all__ = ["ClusterConfig", "LeaderInfo", "LocalCluster", "ReplicaProcess"]


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """How the local replicas run. Defaults favour fast failover on a laptop, not production.

    - ``replicas`` (3): processes started by :meth:`LocalCluster.start`.
    - ``id_prefix`` ("replica"): replica ids are ``{id_prefix}-1`` ... ``{id_prefix}-N``.
    - ``lease_duration_s`` / ``renew_deadline_s`` / ``retry_period_s`` (3 / 2 / 0.5): crash
      failover takes about lease + retry; shorter is faster but less tolerant of pauses.
    - ``workers`` (4): reconcile threads per replica.
    - ``change_poll_s`` / ``idle_poll_s`` / ``progress_poll_s`` (0.2 / 0.2 / 0.5): fast polls so a
      reconcile starts well within a second of ``apply``; each poll is a request to the emulator.
    - ``claim_visibility_s`` (6): a killed replica's claims are retried after at most this long.
    - ``resync_period_s`` (300): full resync period.
    - ``register_rate`` / ``mutate_rate`` (20 / 20): ECS client-side rate limits (task definition
      writes, service mutations per second); the production defaults (1 / 5) would make a
      50-agent test wait on the limiter instead of exercising the controller.
    - ``bucket`` / ``table_prefix`` / ``cluster`` / ``region``: where the control plane lives.
    - ``extra_env``: more ``OAB_*`` settings for every replica (e.g. ``OAB_CHAOS``).
    - ``stop_timeout_s`` (30): how long a graceful stop may take before SIGKILL.
    """

    replicas: int = 3
    id_prefix: str = "replica"
    lease_duration_s: float = 3.0
    renew_deadline_s: float = 2.0
    retry_period_s: float = 0.5
    workers: int = 4
    change_poll_s: float = 0.2
    idle_poll_s: float = 0.2
    progress_poll_s: float = 0.5
    claim_visibility_s: float = 6.0
    resync_period_s: float = 300.0
    register_rate: float = 20.0
    mutate_rate: float = 20.0
    bucket: str = "oab-control-plane"
    table_prefix: str = "oab"
    cluster: str = "oab"
    region: str = "us-east-1"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    stop_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("replicas must be >= 1")
        if not self.lease_duration_s > self.renew_deadline_s > 1.2 * self.retry_period_s:
            raise ValueError("need lease_duration_s > renew_deadline_s > 1.2 * retry_period_s")
        if self.stop_timeout_s <= 0:
            raise ValueError("stop_timeout_s must be > 0")

    def replica_ids(self) -> list[str]:
        """The ids :meth:`LocalCluster.start` uses."""
        return [f"{self.id_prefix}-{i}" for i in range(1, self.replicas + 1)]

    def env(self, endpoint: str) -> dict[str, str]:
        """The replica's ``OAB_*`` / AWS environment (everything but the replica id)."""
        return {
            **LOCAL_ENV,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "OAB_BUCKET": self.bucket,
            "OAB_TABLE_PREFIX": self.table_prefix,
            "OAB_CLUSTER": self.cluster,
            "OAB_EXIT_WITH_PARENT": str(os.getpid()),  # never outlive the harness, even if killed
            "OAB_WORKERS": str(self.workers),
            "OAB_LEASE_DURATION_S": str(self.lease_duration_s),
            "OAB_RENEW_DEADLINE_S": str(self.renew_deadline_s),
            "OAB_RETRY_PERIOD_S": str(self.retry_period_s),
            "OAB_CHANGE_POLL_S": str(self.change_poll_s),
            "OAB_IDLE_POLL_S": str(self.idle_poll_s),
            "OAB_PROGRESS_POLL_S": str(self.progress_poll_s),
            "OAB_CLAIM_VISIBILITY_S": str(self.claim_visibility_s),
            "OAB_RESYNC_PERIOD_S": str(self.resync_period_s),
            "OAB_ECS_REGISTER_RATE": str(self.register_rate),
            "OAB_ECS_MUTATE_RATE": str(self.mutate_rate),
            "OAB_SHUTDOWN_TIMEOUT_S": str(max(1.0, self.stop_timeout_s - 5.0)),
            **self.extra_env,
        }


@dataclass(frozen=True)
class LeaderInfo:
    """The lease as read once: who holds it and in which epoch."""

    holder: str
    epoch: int
    transitions: int


@dataclass
class ReplicaProcess:
    """One running (or finished) replica subprocess and its log file."""

    replica_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` if the process still runs."""
        if self.alive():
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the exit code (raises ``subprocess.TimeoutExpired``)."""
        return self.process.wait(timeout=timeout)

    def close_log(self) -> None:
        """Close this side's handle on the log file (the file stays)."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        """Everything the replica wrote to stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class LocalCluster:
    """N ``oab-controller run`` processes on one emulator (see the module docstring)."""

    def __init__(
        self,
        endpoint: str,
        *,
        log_dir: Path,
        config: ClusterConfig | None = None,
        python: str = sys.executable,
    ) -> None:
        self.endpoint = endpoint
        self.config = config or ClusterConfig()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._python = python
        self._procs: dict[str, ReplicaProcess] = {}
        self._finished: list[ReplicaProcess] = []
        self._ddb: Any = None
        self.tables = TableNames.with_prefix(self.config.table_prefix)

    # ---------------------------------------------------------------- processes
    @property
    def replicas(self) -> Mapping[str, ReplicaProcess]:
        """Replica id -> its current process (live or exited)."""
        return dict(self._procs)

    def start(self) -> list[ReplicaProcess]:
        """Start every replica of the config; returns them."""
        return [self.start_replica(rid) for rid in self.config.replica_ids()]

    def start_replica(self, replica_id: str) -> ReplicaProcess:
        """Start one replica with ``replica_id`` (refused while one with that id runs)."""
        current = self._procs.get(replica_id)
        if current is not None and current.alive():
            raise RuntimeError(f"replica {replica_id} is already running (pid {current.pid})")
        if current is not None:
            current.close_log()
            self._finished.append(current)
        generation = sum(1 for p in self._finished if p.replica_id == replica_id)
        suffix = f".{generation}" if generation else ""
        log_path = self.log_dir / f"{replica_id}{suffix}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OAB_", "AWS_"))}
        env.update(self.config.env(self.endpoint))
        log = log_path.open("wb")
        proc = subprocess.Popen(
            [
                self._python,
                "-m",
                "oab.controller.runtime.daemon",
                "run",
                "--replica-id",
                replica_id,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a terminal Ctrl-C reaches only the caller, which cleans up
        )
        handle = ReplicaProcess(replica_id, proc, log_path, time.monotonic(), log)
        self._procs[replica_id] = handle
        return handle

    def kill(self, replica_id: str) -> None:
        """SIGKILL a replica (a crash: no handoff, its claims expire) and reap it."""
        proc = self._procs[replica_id]
        proc.signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self, replica_id: str, *, timeout: float | None = None) -> int:
        """SIGTERM a replica and wait for its graceful exit; returns its exit code."""
        proc = self._procs[replica_id]
        proc.signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout or self.config.stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.signal(signal.SIGKILL)
            proc.wait(timeout=10)
            raise

    def restart(self, replica_id: str) -> ReplicaProcess:
        """Stop ``replica_id`` if it runs (gracefully), then start it again."""
        if self._procs[replica_id].alive():
            self.stop(replica_id)
        return self.start_replica(replica_id)

    def alive(self) -> list[str]:
        """Ids of the replicas whose process runs."""
        return [rid for rid, p in self._procs.items() if p.alive()]

    def logs(self) -> dict[str, str]:
        """Every log written so far, by file name (restarted replicas keep their old logs)."""
        out: dict[str, str] = {}
        for proc in [*self._finished, *self._procs.values()]:
            out[proc.log_path.name] = proc.log_text()
        return out

    def close(self) -> None:
        """Stop every replica: SIGTERM all at once, then SIGKILL what outlives the budget."""
        for proc in self._procs.values():
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.signal(signal.SIGKILL)
                proc.wait(timeout=10)
        for proc in [*self._finished, *self._procs.values()]:
            proc.close_log()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------- leader
    def _dynamodb(self) -> Any:
        if self._ddb is None:
            self._ddb = boto3.session.Session(
                aws_access_key_id=LOCAL_ENV["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
                region_name=self.config.region,
            ).client("dynamodb", endpoint_url=self.endpoint)
        return self._ddb

    def leader(self) -> LeaderInfo | None:
        """The current lease holder and epoch, or None while the lease is free/never taken."""
        info = describe(self._dynamodb(), self.tables.lease, "controller")
        if not info.get("holder"):
            return None
        return LeaderInfo(
            holder=str(info["holder"]),
            epoch=int(info["epoch"]),
            transitions=int(info.get("transitions") or 0),
        )

    def wait_for_leader(
        self,
        *,
        timeout: float,
        not_holder: str | None = None,
        after_epoch: int = 0,
        among: Sequence[str] | None = None,
    ) -> LeaderInfo:
        """Wait until a live replica other than ``not_holder`` leads in an epoch > ``after_epoch``.

        ``among`` restricts the acceptable holders (default: replicas whose process runs).
        """

        def found() -> LeaderInfo | None:
            info = self.leader()
            if info is None or info.holder == not_holder or info.epoch <= after_epoch:
                return None
            allowed = among if among is not None else self.alive()
            return info if info.holder in allowed else None

        return wait_until(found, timeout=timeout, interval=0.1, message="a new leader")
