"""``oabctl wait``: block until an agent meets a condition for its current generation.

Listed in ``COMMANDS`` (offered by
:data:`oab.controller.cli.main.GROUPS`); exit 0 when met, 1 when failed, timed out or not
found, 2 usage.

Design
------
- **Pure core, thin command.** ``--for`` parsing (:func:`parse_wait_for`), the verdict of one
  observation (:func:`evaluate`) and the polling loop (:func:`wait_for`, clock and sleep
  injected) are apart from argument handling, so they are tested on their own.
- **Reads the truth directly**: the manifest from the desired-state store (S3, strongly
  consistent) and the status item from DynamoDB with a consistent read, every poll; nothing is
  cached between polls. Polling backs off (:class:`WaitPolicy`) and resets when things move.

Invariants
----------
- ``wait --for=condition=...`` is met only for the *current* generation: the status's
  ``observedGeneration`` must equal the manifest's ``metadata.generation``; a ``Failed`` phase
  for that generation ends the wait with exit 1 unless the awaited condition itself holds.
- A missing agent fails at once for a condition (a typo should not wait for the timeout); for
  ``--for=delete`` a name that never existed counts as deleted (like kubectl).

Time model: the deadline and the pauses use the monotonic clock (injected in :func:`wait_for`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from oab.controller.adapters.store import StoredObject, object_key
from oab.controller.base.names import SERVICE_RESOURCE
from oab.controller.cli.common import (
    KIND,
    add_namespace,
    agent_key,
    parse_duration,
    require_agent,
)
from oab.controller.cli.context import Context
from oab.controller.cli.registry import EXIT_INVALID, EXIT_OK, Command, UsageError, command
from oab.controller.core.status import AgentStatus
from oab.controller.core.stored import UnreadableItem

__all__ = [
    "COMMANDS",
    "Observation",
    "Verdict",
    "WaitPolicy",
    "WaitTarget",
    "evaluate",
    "parse_wait_for",
    "wait_for",
]

# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class WaitTarget:
    """What ``wait --for`` asks for: a condition with a status, or the agent's deletion."""

    kind: Literal["condition", "delete"]
    condition: str = ""
    status: str = "True"

    def describe(self) -> str:
        """Human form, for progress and errors."""
        if self.kind == "delete":
            return "deletion"
        return f"condition {self.condition}={self.status}"


def parse_wait_for(text: str) -> WaitTarget:
    """Parse ``condition=Available``, ``condition=Available=False`` or ``delete``."""
    if text == "delete":
        return WaitTarget("delete")
    if text.startswith("condition="):
        rest = text.removeprefix("condition=")
        name, _, status = rest.partition("=")
        status = status or "True"
        normal = {"true": "True", "false": "False", "unknown": "Unknown"}.get(status.lower())
        if name and normal is not None:
            return WaitTarget("condition", name, normal)
    raise UsageError(
        f"invalid --for {text!r}: use condition=NAME, condition=NAME=True|False|Unknown or delete"
    )


# ---------------------------------------------------------------------------------- core


@dataclass(frozen=True)
class Observation:
    """One poll: the manifest (None once removed) and the agent's status; ``unreadable`` says
    why the status item could not be read (then ``status`` is empty)."""

    manifest: StoredObject | None
    status: AgentStatus
    unreadable: str = ""


@dataclass(frozen=True)
class Verdict:
    """Where a wait stands: ``met``, ``pending`` (keep polling), ``failed`` or ``timeout``."""

    state: Literal["met", "pending", "failed", "timeout"]
    message: str


def _failure_reason(status: AgentStatus) -> str:
    for kind in ("SecretInjectionFailed", "Degraded"):
        cond = status.condition(kind)
        if cond is not None and cond.status == "True":
            return f"{cond.reason}: {cond.message}"
    available = status.condition("Available")
    if available is not None and available.status != "True":
        return f"{available.reason}: {available.message}"
    return status.last_error or "no reason recorded"


def evaluate(target: WaitTarget, obs: Observation) -> Verdict:
    """The verdict of one observation (pure). See the module doc for the rules."""
    manifest, status = obs.manifest, obs.status
    if target.kind == "delete":
        if manifest is None:
            return Verdict("met", "deleted")
        step = f" (finalizer step {status.finalizer_step})" if status.finalizer_step else ""
        state = "terminating" if manifest.deleted else "not deleted"
        return Verdict("pending", f"{state}{step}")
    if manifest is None:
        return Verdict("failed", "the agent was deleted")
    if manifest.deleted:
        return Verdict("failed", "the agent is being deleted")
    if obs.unreadable:
        # Terminal until someone repairs the item: waiting longer cannot help.
        return Verdict("failed", f"the status cannot be read: {obs.unreadable}")
    generation = manifest.generation
    if status.observed_generation != generation:
        return Verdict(
            "pending",
            f"generation {generation} not observed yet (observed {status.observed_generation})",
        )
    cond = status.condition(target.condition)
    if cond is not None and cond.status == target.status:
        return Verdict("met", f"{target.condition}={cond.status} ({cond.reason})")
    if status.phase == "Failed":
        return Verdict("failed", f"Failed at generation {generation}: {_failure_reason(status)}")
    if cond is None:
        return Verdict("pending", f"phase {status.phase or 'Pending'}, {target.condition} not set")
    return Verdict(
        "pending",
        f"phase {status.phase or 'Pending'}, {target.condition}={cond.status} "
        f"({cond.reason}: {cond.message})",
    )


@dataclass(frozen=True, kw_only=True)
class WaitPolicy:
    """Polling of ``wait``: bounded exponential backoff between consistent reads.

    - ``initial_interval`` (0.2 s): first pause; short so a fast rollout returns promptly.
    - ``max_interval`` (2.0 s): the cap; one ``wait`` costs at most two reads per cap interval.
    - ``factor`` (1.5): growth per poll while nothing changes; the pause resets to
      ``initial_interval`` whenever the observation's message changes (things are moving).
    """

    initial_interval: float = 0.2
    max_interval: float = 2.0
    factor: float = 1.5

    def __post_init__(self) -> None:
        if not 0 < self.initial_interval <= self.max_interval:
            raise ValueError("need 0 < initial_interval <= max_interval")
        if self.factor < 1:
            raise ValueError("factor must be >= 1")


def wait_for(
    observe: Callable[[], Observation],
    target: WaitTarget,
    *,
    timeout: float,
    policy: WaitPolicy | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] = lambda _m: None,
) -> Verdict:
    """Poll ``observe`` until ``target`` is met, fails, or ``timeout`` seconds pass.

    Calls ``progress`` once per change of the pending message. Never sleeps past the deadline;
    the last observation is always evaluated before reporting a timeout.
    """
    policy = policy or WaitPolicy()
    deadline = monotonic() + timeout
    interval = policy.initial_interval
    last = ""
    while True:
        verdict = evaluate(target, observe())
        if verdict.state != "pending":
            return verdict
        if verdict.message != last:
            progress(verdict.message)
            last = verdict.message
            interval = policy.initial_interval
        remaining = deadline - monotonic()
        if remaining <= 0:
            return Verdict("timeout", verdict.message)
        sleep(min(interval, remaining))
        interval = min(policy.max_interval, interval * policy.factor)


# ------------------------------------------------------------------------------- command


def _configure_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="agent name")
    add_namespace(p)
    p.add_argument(
        "--for",
        dest="wait_for",
        required=True,
        metavar="condition=NAME[=STATUS]|delete",
        help="what to wait for, e.g. condition=Available, condition=Degraded=False, delete",
    )
    p.add_argument("--timeout", default="30s", help="give up after this long (default 30s)")


@command(
    "wait",
    help="wait until an agent meets a condition for its current generation (or is deleted)",
    configure=_configure_wait,
)
def _wait(ctx: Context) -> int:
    target = parse_wait_for(ctx.args.wait_for)
    timeout = parse_duration(ctx.args.timeout)
    namespace, name = ctx.args.namespace, ctx.args.name
    key = agent_key(ctx)
    store = ctx.store()
    state = ctx.state()
    manifest_key = object_key(KIND, namespace, name)
    if target.kind == "condition":
        require_agent(store, namespace, name)  # a typo should fail now, not after the timeout

    def observe() -> Observation:
        manifest = store.get(manifest_key)
        try:
            return Observation(manifest, state.read_status(key))
        except UnreadableItem as exc:
            return Observation(manifest, AgentStatus(key=key), unreadable=str(exc))

    verdict = wait_for(
        observe,
        target,
        timeout=timeout,
        progress=lambda m: ctx.progress(f"waiting for {key} {target.describe()}: {m}"),
    )
    if verdict.state == "met":
        met = "deleted" if target.kind == "delete" else "condition met"
        ctx.print(f"{SERVICE_RESOURCE}/{name} {met}")
        return EXIT_OK
    if verdict.state == "timeout":
        ctx.stderr.write(
            f"error: timed out after {ctx.args.timeout} waiting for {target.describe()} "
            f"on {SERVICE_RESOURCE}/{name} (last seen: {verdict.message})\n"
        )
    else:
        ctx.stderr.write(f"error: {key}: {verdict.message}\n")
    return EXIT_INVALID


#: This group's commands, in the order ``oabctl --help`` lists them (sorted there by name).
COMMANDS: tuple[Command, ...] = (_wait,)
