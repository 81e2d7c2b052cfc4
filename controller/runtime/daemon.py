"""``oab-controller run``: the reconcile daemon (one replica of the HA control plane).

Every replica runs workers; the replica that holds the lease also runs the scheduler. The process
runs until SIGTERM or SIGINT, then shuts down gracefully within ``shutdown_timeout_s``: it stops
claiming, finishes or releases in-flight work, hands the lease over, and exits 0. A second signal
exits at once (status 130/143) without the handoff.

Exit codes: 0 clean shutdown; 2 invalid settings or usage; 3 AWS unreachable at start;
70 a control loop ended unexpectedly (a worker thread, the scheduler or the elector: a bug,
since each contains every per-unit failure), or the elector's watchdog found the renew loop
stuck (exits hard, by design). Either way ECS replaces the task.

Health: while its elector and worker threads are alive, a running replica rewrites the health
file (``OAB_HEALTH_FILE``, default ``/tmp/oab-controller.health``) every second;
``oab-controller healthcheck`` (the container health check) exits 0 when the file is fresher
than ``OAB_HEALTH_MAX_AGE_S`` (default 15 s), 1 otherwise. When a loop dies the file is removed
at once (the health check fails at its next run, not after the max age), the replica shuts down
as on SIGTERM (in-flight claims released, lease handed over) and the process exits 70.

Structured logs go to stderr, one JSON object per line (``--log-format text`` for people).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from oab.controller.base.errors import OabError
from oab.controller.observability import logscrub
from oab.controller.observability.logscrub import scrub_record
from oab.controller.runtime.settings import (
    DaemonSettings,
    DaemonSettingsError,
    load_daemon_settings,
)

#: Set by local harnesses to their own pid: the replica shuts down once that process is no longer
#: its parent (it died, even by SIGKILL, which runs no clean-up).
EXIT_WITH_PARENT_ENV = "OAB_EXIT_WITH_PARENT"

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
EXIT_INFRA = 3
#: A control loop ended unexpectedly (sysexits' EX_SOFTWARE, as the elector's watchdog uses).
EXIT_SOFTWARE = 70


def health_file() -> Path:
    """Where a running replica reports that it is alive."""
    return Path(os.environ.get("OAB_HEALTH_FILE", "/tmp/oab-controller.health"))


def healthcheck() -> int:
    """Exit code of the container health check (see the module docstring)."""
    max_age = float(os.environ.get("OAB_HEALTH_MAX_AGE_S", "15"))
    try:
        age = time.time() - float(health_file().read_text().strip())
    except (OSError, ValueError):
        return EXIT_UNHEALTHY
    return EXIT_OK if age <= max_age else EXIT_UNHEALTHY


_STD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the ``extra`` fields (replica, epoch, key, ...).

    Every record is scrubbed first (:func:`oab.controller.observability.logscrub.scrub_record`:
    message, ``extra`` fields by name and value, exception text), even on a handler that lacks the
    filter, so a secret never reaches the JSON.
    """

    def format(self, record: logging.LogRecord) -> str:
        scrub_record(record)
        data: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                data[key] = value if isinstance(value, int | float | bool | str) else str(value)
        if record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = record.stack_info
        return json.dumps(data, sort_keys=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oab-controller", description="The oab-controller reconcile daemon."
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run one replica until SIGTERM")
    run.add_argument("--config", help="TOML settings file (or OAB_CONTROLLER_CONFIG)")
    run.add_argument("--replica-id", dest="replica_id")
    run.add_argument("--region")
    run.add_argument("--bucket")
    run.add_argument("--table-prefix", dest="table_prefix")
    run.add_argument("--cluster")
    run.add_argument("--endpoint", help="AWS endpoint override (local emulator)")
    run.add_argument("--workers", type=int)
    run.add_argument("--lease-duration", dest="lease_duration_s", type=float)
    run.add_argument("--renew-deadline", dest="renew_deadline_s", type=float)
    run.add_argument("--retry-period", dest="retry_period_s", type=float)
    run.add_argument("--resync-period", dest="resync_period_s", type=float)
    run.add_argument("--claim-visibility", dest="claim_visibility_s", type=float)
    run.add_argument("--backoff-base", dest="backoff_base_s", type=float)
    run.add_argument("--backoff-cap", dest="backoff_cap_s", type=float)
    run.add_argument("--shutdown-timeout", dest="shutdown_timeout_s", type=float)
    run.add_argument("--log-format", choices=("json", "text"), default="json")
    run.add_argument("--log-level", default="INFO")
    sub.add_parser("settings", help="print the effective settings as JSON and exit")
    sub.add_parser("healthcheck", help="exit 0 if the local replica reported alive recently")
    return parser


def _setup_logging(fmt: str, level: str, replica: str) -> None:
    # Both formats go through the one scrubber (logscrub): no secret in any log line.
    handler = logscrub.install(logging.StreamHandler(sys.stderr))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {replica} %(levelname)s %(name)s %(message)s")
        )
    if logging.lastResort is not None:
        logscrub.install(logging.lastResort)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("botocore").setLevel(logging.WARNING)


class Wakeup:
    """A stop flag that a signal handler may set: no lock is taken on the way.

    ``threading.Event.set`` takes the event's lock; a handler that runs while the main thread
    is inside ``Event.wait`` (which holds that lock for a moment around the sleep) would wait
    on itself forever. ``set`` here only stores a flag and writes one byte to a pipe, which
    wakes :meth:`wait` (a ``select`` on the pipe); both are safe in a handler and from threads.
    """

    def __init__(self) -> None:
        self._flag = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def set(self) -> None:
        """Raise the flag and wake the waiter (signal- and thread-safe)."""
        self._flag = True
        # A full pipe means the waiter has wake bytes pending already.
        with contextlib.suppress(OSError):
            os.write(self._write, b"x")

    def is_set(self) -> bool:
        """Whether :meth:`set` was called."""
        return self._flag

    def wait(self, timeout: float) -> bool:
        """Wait until set or ``timeout`` seconds passed; returns the flag."""
        if not self._flag:
            select.select([self._read], [], [], timeout)
        return self._flag


class _Stop(Protocol):
    """What :func:`supervise` waits on: a :class:`Wakeup` or a ``threading.Event``."""

    def wait(self, timeout: float) -> bool: ...
    def is_set(self) -> bool: ...


def run(settings: DaemonSettings) -> int:
    """Run one replica until a signal (or a loop's death); returns the exit code."""
    from oab.controller.runtime.replica import Replica

    stop = Wakeup()
    signals = {"count": 0}

    def _on_signal(signum: int, _frame: object) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            # No logging here: a handler must not take the locks the interrupted code may hold.
            os.write(2, b'{"level": "WARNING", "msg": "second signal: exiting at once"}\n')
            raise SystemExit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    from oab.controller.observability import telemetry

    telemetry_handle = telemetry.setup(
        telemetry.TelemetryConfig.from_env(
            service_name="oab-controller", instance_id=settings.replica_id
        )
    )
    # A dying loop wakes the supervision loop at once (it also polls every second).
    replica = Replica(settings, on_loop_died=lambda _name: stop.set())
    log = logging.getLogger("oab.controller")
    replica.start()
    log.info("replica started", extra={"replica": settings.replica_id})
    # Local harnesses (LocalCluster, the chaos suite) set OAB_EXIT_WITH_PARENT to their pid.
    watched = os.environ.get(EXIT_WITH_PARENT_ENV, "")
    code = supervise(
        replica,
        stop=stop,
        beat=health_file(),
        parent=int(watched) if watched.isdigit() else None,
        replica_id=settings.replica_id,
    )
    telemetry_handle.flush()
    return code


class _Supervised(Protocol):
    """What :func:`supervise` needs of a replica."""

    def alive(self) -> bool: ...
    def dead_loops(self) -> list[str]: ...
    def shutdown(self) -> bool: ...


def supervise(
    replica: _Supervised,
    *,
    stop: _Stop,
    beat: Path,
    parent: int | None,
    replica_id: str = "",
) -> int:
    """Report health every second until ``stop`` (a signal), the parent ``parent`` is gone, or a
    loop of the replica dies; then shut the replica down. Returns the exit code: 0, or
    :data:`EXIT_SOFTWARE` when a loop died (its health file is removed first)."""
    log = logging.getLogger("oab.controller")
    while not stop.wait(1.0):
        if parent is not None and os.getppid() != parent:
            log.warning("the process that started this replica is gone: shutting down")
            break
        if not replica.alive():
            break
        try:
            beat.write_text(f"{time.time():.3f}\n")
        except OSError:
            log.warning("cannot write health file", extra={"path": str(beat)})
    if not replica.alive():
        dead = replica.dead_loops() or ["elector or worker thread"]
        log.critical(
            "control loop(s) ended: %s; exiting %d so that this replica is replaced",
            ", ".join(dead),
            EXIT_SOFTWARE,
            extra={"replica": replica_id},
        )
        beat.unlink(missing_ok=True)
        replica.shutdown()
        return EXIT_SOFTWARE
    log.info("shutting down", extra={"replica": replica_id})
    drained = replica.shutdown()
    log.info("stopped", extra={"replica": replica_id, "drained": drained})
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``oab-controller`` console script."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        _parser().print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "healthcheck":
        return healthcheck()
    flags = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "config", "log_format", "log_level")
    }
    try:
        settings = load_daemon_settings(flags, path=getattr(args, "config", None))
    except DaemonSettingsError as exc:
        sys.stderr.write(f"oab-controller: {exc}\n")
        return EXIT_USAGE
    if args.command == "settings":
        sys.stdout.write(settings.model_dump_json(indent=2) + "\n")
        return EXIT_OK
    _setup_logging(args.log_format, args.log_level, settings.replica_id)
    try:
        return run(settings)
    except OabError as exc:
        sys.stderr.write(f"oab-controller: {exc}\n")
        return EXIT_INFRA


if __name__ == "__main__":
    sys.exit(main())
