"""Test doubles shipped with the package, in the manner of ``kopf.testing``.

- :class:`FakeClock` - a manual clock with both a monotonic and a wall reading; ``advance`` moves
  both. It satisfies the controller's :class:`~oab.controller.base.clock.Clock` and the clocks of
  ``oab.leader`` and ``oab.queue`` structurally. :class:`SequentialIds` (``prefix-000001``, ...)
  and :func:`wait_until` (poll a condition with a deadline: no sleep-and-hope in tests) come
  with it; the three are ``oab.leader.testing``'s (the leader's and the queue's tests use their
  own packages' doubles, never this module).
- :func:`local_aws` - start the serialized emulator (see :mod:`oab.controller.local.emulator`).
- :func:`spawn_parent` / :func:`process_exited` - a parent process that starts a child (to be
  killed without clean-up), and whether a pid has exited (zombies count).
- :func:`oabctl` - run the CLI in process (``cli.main``) and capture exit code, stdout, stderr.
- :func:`agent_manifest` - an ``OABService`` manifest for one agent (name, namespace, image tag,
  its SSM secret and the few options tests vary).
- :func:`prepare_plane` - an emulator ready for ``oabctl`` and replicas: optionally reset, the
  simulated data plane sped up, the environment (endpoint, ``OABCTL_CONFIG``, bucket) and,
  optionally, ``oabctl init``.
- :func:`replica_settings` / :func:`running_replica` - an in-process replica with short leases
  and polls, always shut down when the block ends.
- :func:`reconcile_request` - the reconciler's input for one key, as the worker builds it from
  a queue row with that stored ``reason`` (decoded by ``origin_of``).
- :func:`all_statuses` / :func:`available_at` - every agent's status in one Scan, and the
  "Running and Available at generation N" check that end-to-end runs wait for.

Heavier modules (the CLI, the replica) are imported where they are used, so that importing the
test doubles stays cheap. Nothing in the product imports this package (an import-linter contract).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import boto3

from oab.controller.adapters import tables
from oab.controller.base.names import TableNames
from oab.controller.local.dataplane_control import DataPlaneControl
from oab.controller.local.emulator import LocalAWS, start
from oab.leader.testing import FakeClock, SequentialIds, wait_until

if TYPE_CHECKING:
    from oab.controller.adapters.changes import ChangeLog
    from oab.controller.adapters.statestore import DynamoStateStore
    from oab.controller.core.outcome import Request
    from oab.controller.core.status import AgentStatus, AuditRecord
    from oab.controller.runtime.replica import Replica
    from oab.controller.runtime.settings import DaemonSettings

__all__ = [
    "AWS",
    "CliResult",
    "FakeClock",
    "LocalAWS",
    "SequentialIds",
    "agent_manifest",
    "all_statuses",
    "audit_record",
    "available_at",
    "local_aws",
    "oabctl",
    "prepare_plane",
    "process_exited",
    "reconcile_request",
    "replica_settings",
    "running_replica",
    "spawn_parent",
    "wait_until",
]


def spawn_parent(script: str) -> tuple[subprocess.Popen[str], int]:
    """Run ``python -c script``; the script starts a child and prints its pid as its first line.

    Returns the parent process and the child's pid, so a test can SIGKILL the parent (no clean-up
    code runs) and check that the child does not outlive it.
    """
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def process_exited(pid: int) -> bool:
    """Whether ``pid`` has exited: gone, or a zombie whose reaping is all that is left."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (ProcessLookupError, FileNotFoundError):
        return True
    return state == "Z"


def local_aws(*, port: int = 0, dataplane: bool = True) -> LocalAWS:
    """Start a serialized local AWS emulator process; stop it with ``.stop()`` or ``with``.

    ``dataplane`` (default on) runs the simulated ECS data plane inside it, so ECS services get
    deployments and tasks as on AWS (see :mod:`oab.controller.local.dataplane`).
    """
    return start(port=port, dataplane=dataplane)


class AWS:
    """Handles an integration test needs: the emulator, a boto3 session and the table names."""

    def __init__(self, emulator: LocalAWS, *, names: TableNames | None = None) -> None:
        self.emulator = emulator
        self.session = boto3.Session(region_name="us-east-1")
        self.tables = names or TableNames()

    def client(self, service: str) -> Any:
        """A plain boto3 client for ``service`` pointed at the emulator."""
        return self.session.client(service, endpoint_url=self.emulator.endpoint)

    def reset(self) -> None:
        """Empty the emulated account and create the control-plane tables again."""
        self.emulator.reset()
        tables.ensure_tables(self.client("dynamodb"), self.tables)

    def state_store(
        self, *, client: Any = None, changes: ChangeLog | None = None
    ) -> DynamoStateStore:
        """The product's state store on these tables, through ``client`` (a DynamoDB client of
        the test's, e.g. with failure hooks) or a new one; ``changes`` replaces its change log
        (a test's clock)."""
        from oab.controller.adapters.models import bind_models
        from oab.controller.adapters.statestore import DynamoStateStore

        ddb = client if client is not None else self.client("dynamodb")
        return DynamoStateStore(bind_models(ddb, self.tables), changes=changes)


class CliResult(NamedTuple):
    """What one in-process ``oabctl`` run returned; unpacks as ``code, out, err``."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as JSON (for ``-o json``)."""
        return json.loads(self.out)

    def ok(self) -> str:
        """stdout of a run that must have succeeded; ``AssertionError`` naming stderr otherwise."""
        if self.code != 0:
            raise AssertionError(f"oabctl exited {self.code}: {self.err}")
        return self.out


def oabctl(*argv: str, stdin: str = "", env: Mapping[str, str] | None = None) -> CliResult:
    """Run ``oabctl argv`` in this process with ``stdin`` as its input.

    ``env`` replaces the process environment for the CLI's settings (``None``: the process's).
    """
    from oab.controller.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin), env=env)
    return CliResult(code, out.getvalue(), err.getvalue())


def agent_manifest(
    name: str = "bot",
    *,
    namespace: str = "team",
    tag: str = "v1",
    secret_path: str | None = None,
    auto_restart: bool | None = None,
    labels: Mapping[str, str] | None = None,
    bootstrap_from: str | None = None,
    extra_secrets: str = "",
) -> str:
    """A Kiro-on-Discord ``OABService`` manifest (YAML) for ``namespace/name``.

    The bot token comes from SSM at ``secret_path`` (default ``/oab/{namespace}/{name}/
    discord-token``); ``auto_restart`` adds ``autoRestart`` to that secret when not ``None``;
    ``extra_secrets`` is appended verbatim to the ``secrets`` list (YAML items indented 4).
    """
    path = secret_path or f"/oab/{namespace}/{name}/discord-token"
    lines = [
        "apiVersion: oab.dev/v1",
        "kind: OABService",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {namespace}",
    ]
    if labels:
        lines += ["  labels:", *(f"    {k}: {v}" for k, v in labels.items())]
    lines += [
        "spec:",
        "  cpu: 256",
        "  memory: 512",
        "  taskDefinition:",
        f"    image: ghcr.io/openabdev/openab:{tag}",
    ]
    if bootstrap_from is not None:
        lines.append(f"  bootstrapFrom: {bootstrap_from}")
    lines += [
        "  secrets:",
        "    - name: DISCORD_BOT_TOKEN",
        "      source: ssm",
        f"      path: {path}",
    ]
    if auto_restart is not None:
        lines.append(f"      autoRestart: {'true' if auto_restart else 'false'}")
    tail = [
        "  config:",
        "    agent:",
        "      preset: kiro",
        "    discord:",
        "      bot_token: ${DISCORD_BOT_TOKEN}",
        '      allowed_channels: ["123456789012345678"]',
    ]
    return "\n".join(lines) + "\n" + extra_secrets + "\n".join(tail) + "\n"


def prepare_plane(
    emulator: LocalAWS,
    *,
    config: Path,
    bucket: str | None = None,
    extra: Mapping[str, str] | None = None,
    reset: bool = False,
    start_delay_s: float = 0.3,
    tick_s: float = 0.05,
    init: bool = False,
) -> dict[str, str]:
    """Make ``emulator`` ready for ``oabctl`` and in-process replicas; return the variables set.

    ``reset`` empties the account first (the ``aws`` fixture has already done so); the simulated
    data plane starts tasks after ``start_delay_s`` and steps every ``tick_s`` (fast, for tests).
    The returned overlay holds the emulator's variables, ``OABCTL_CONFIG=config`` (a file that
    need not exist: no profile), ``OAB_BUCKET`` when ``bucket`` is given and ``extra``. With
    ``init`` the control plane is created by ``oabctl init`` run with the process environment
    plus the overlay (``AssertionError`` when it fails).
    """
    if reset:
        emulator.reset()
    DataPlaneControl(emulator.endpoint).configure(start_delay_s=start_delay_s, tick_s=tick_s)
    overlay = {**emulator.env(), "OABCTL_CONFIG": str(config)}
    if bucket is not None:
        overlay["OAB_BUCKET"] = bucket
    overlay.update(extra or {})
    if init:
        oabctl("init", env={**os.environ, **overlay}).ok()
    return overlay


def replica_settings(
    endpoint: str, *, bucket: str, replica_id: str = "r1", **overrides: Any
) -> DaemonSettings:
    """Settings for an in-process replica that reacts fast: 0.1 s polls, a 3 s lease, 2 workers.

    ``overrides`` replace any field (``table_prefix``, ``cluster``, ``workers``, ...).
    """
    from oab.controller.runtime.settings import DaemonSettings

    values: dict[str, Any] = {
        "replica_id": replica_id,
        "endpoint": endpoint,
        "bucket": bucket,
        "change_poll_s": 0.1,
        "idle_poll_s": 0.1,
        "progress_poll_s": 0.3,
        "workers": 2,
        "lease_duration_s": 3.0,
        "renew_deadline_s": 2.0,
        "retry_period_s": 0.5,
        **overrides,
    }
    return DaemonSettings(**values)


@contextmanager
def running_replica(settings: DaemonSettings) -> Iterator[Replica]:
    """A started :class:`~oab.controller.runtime.replica.Replica`, always shut down at the end."""
    from oab.controller.runtime.replica import Replica

    replica = Replica(settings)
    # Started inside the try: a start that fails half-way still stops what did start.
    try:
        replica.start()
        yield replica
    finally:
        replica.shutdown()


def all_statuses(client: Any, table: str) -> dict[str, AgentStatus]:
    """Every agent status item in the state ``table``, by key (one consistent, paginated Scan)."""
    from dataclasses import replace

    from oab.controller.adapters.models import bind_models
    from oab.controller.adapters.statestore import DynamoStateStore

    names = replace(TableNames(), state=table)
    return DynamoStateStore(bind_models(client, names)).statuses()


def available_at(status: AgentStatus | None, generation: int) -> bool:
    """True when ``status`` is Running with condition Available=True at ``generation``."""
    if status is None or status.phase != "Running" or status.observed_generation != generation:
        return False
    cond = status.condition("Available")
    return cond is not None and cond.status == "True"


def audit_record(
    before: AgentStatus, after: AgentStatus, *, run_id: str, at: float, **fields: Any
) -> AuditRecord:
    """The run-log row of the transition ``before -> after`` as a run of another replica
    (``r9``, token ``tok-other``, outcome ``done``) commits it; ``fields`` override any field."""
    from oab.controller.core.status import AuditRecord

    values: dict[str, Any] = {
        "key": after.key,
        "seq": after.audit_seq,
        "run_id": run_id,
        "generation": 1,
        "token": "tok-other",
        "replica": "r9",
        "epoch": 0,
        "trace_id": "",
        "span_id": "",
        "from_phase": before.phase,
        "to_phase": after.phase,
        "calls": (),
        "outcome": "done",
        "error": "",
        "duration_ms": 1,
        "at": at,
    }
    return AuditRecord(**(values | fields))


def reconcile_request(
    key: str, *, token: str = "t", reason: str = "apply", attempt: int = 1, run_id: str = "r"
) -> Request:
    """The reconciler's input for ``key``, as the worker builds it from a claimed queue row whose
    stored ``reason`` is ``reason`` (``apply``, ``resync:<drift>``, ``schedule@<instant>``...)."""
    from oab.controller.api.service import AgentKey
    from oab.controller.core.outcome import Request, RunContext, origin_of

    run = RunContext(run_id=run_id, attempt=attempt, token=token, origin=origin_of(reason, None))
    return Request(key=AgentKey(key), run=run)
