"""``python -m oab.controller.local.demo`` (``make demo``): the main job on local AWS, then exit.

Steps (every one through the same code paths a user runs):

1. start the serialized local AWS with the simulated ECS data plane on a free port;
2. ``oabctl init``; start three ``oab-controller run`` replicas
(:mod:`oab.controller.local.cluster`); 3. ``oabctl apply -f examples/`` and wait, with progress
lines, until every agent is Available; 4. SIGKILL the leader, show the takeover (new holder, epoch,
seconds without a leader); 5. apply a change and show it reconciled (Running at the new generation)
under the new leader; 6. ``oabctl get -A`` and a short summary (agents, leader epochs, failover
seconds).

The examples carry placeholder networking ids of a real VPC, which the emulator cannot have
(moto validates subnets and security groups and cannot create them with chosen ids), so the demo
applies a copy of the examples without their ``networking`` blocks: the agents then use the
cluster defaults that ``oabctl init`` created locally. Nothing else in the examples is changed.

Exit status: 0 when every step succeeded; the failing ``oabctl`` step's exit code; 1 when an
agent does not become Available in time; 130 on Ctrl-C. Every process (emulator, replicas) is
stopped on every path, SIGTERM included.

Time model: progress and deadlines use ``time.monotonic``; nothing else reads a clock.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import boto3
import yaml

from oab.controller.adapters.models import bind_models
from oab.controller.adapters.statestore import DynamoStateStore
from oab.controller.base.errors import OabError
from oab.controller.base.names import TableNames
from oab.controller.cli import main as cli
from oab.controller.cli.registry import EXIT_INTERRUPTED, EXIT_OK
from oab.controller.core.status import AgentStatus
from oab.controller.local.cluster import ClusterConfig, LeaderInfo, LocalCluster
from oab.controller.local.dataplane import DataPlaneControl
from oab.controller.local.emulator import LOCAL_ENV, start

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Seconds the simulated data plane takes to start a task (Fargate takes tens of seconds).
START_DELAY_S = 1.0
AVAILABLE_TIMEOUT_S = 90.0
TAKEOVER_TIMEOUT_S = 30.0
#: The agent the demo changes after the failover, and how.
CHANGED = ("default", "kiro-reviewer")


class DemoError(OabError):
    """A step failed; ``code`` is the demo's exit status."""

    reason = "DemoError"

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _say(message: str) -> None:
    sys.stdout.write(f"demo: {message}\n")
    sys.stdout.flush()


def _without_networking(doc: Any) -> Any:
    if not isinstance(doc, dict):
        return doc
    spec = doc.get("spec")
    if isinstance(spec, dict):
        spec.pop("networking", None)
        defaults = spec.get("defaults")
        if isinstance(defaults, dict):
            defaults.pop("networking", None)
        for agent in spec.get("agents") or []:
            if isinstance(agent, dict):
                agent.pop("networking", None)
    return doc


def local_examples(source: Path, target: Path) -> list[Path]:
    """Copy every manifest of ``source`` to ``target`` without ``networking`` blocks."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("*.y*ml")):
        docs = [_without_networking(d) for d in yaml.safe_load_all(path.read_text())]
        out = target / path.name
        out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        written.append(out)
    return written


def _changed_manifest(source: Path, target: Path) -> Path:
    """The CHANGED agent's manifest with one env value changed (a new generation)."""
    ns, name = CHANGED
    for path in sorted(source.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            meta = (doc or {}).get("metadata", {})
            if doc.get("kind") == "OABService" and (meta.get("namespace"), meta.get("name")) == (
                ns,
                name,
            ):
                doc["spec"].setdefault("env", {})["LOG_LEVEL"] = "debug"
                out = target / f"{name}-changed.yaml"
                out.write_text(yaml.safe_dump(doc, sort_keys=False))
                return out
    raise DemoError(f"no OABService {ns}/{name} in {source}")


def _available(status: AgentStatus | None, generation: int | None = None) -> bool:
    if status is None or status.phase != "Running":
        return False
    if generation is not None and status.observed_generation != generation:
        return False
    cond = status.condition("Available")
    return cond is not None and cond.status == "True"


def _wait(check: Callable[[], tuple[bool, str]], *, timeout: float, every: float = 2.0) -> float:
    """Poll ``check`` (done?, progress line) until done; prints progress; returns seconds."""
    started = time.monotonic()
    last_line, last_print = "", 0.0
    while True:
        done, line = check()
        now = time.monotonic()
        if done:
            _say(f"{line} ({now - started:.1f} s)")
            return now - started
        if line != last_line or now - last_print >= every:
            _say(line)
            last_line, last_print = line, now
        if now - started > timeout:
            raise DemoError(f"timed out after {timeout:.0f} s: {line}")
        time.sleep(0.5)


def _oabctl(argv: list[str], env: Mapping[str, str]) -> None:
    sys.stdout.write(f"\n$ oabctl {' '.join(argv)}\n")
    sys.stdout.flush()
    code = cli.main(argv, env=env)
    if code != EXIT_OK:
        raise DemoError(f"`oabctl {' '.join(argv)}` failed with exit {code}", code)


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop every process


def _agent_keys(examples: list[Path]) -> list[str]:
    """``ns/name`` of every agent the manifests declare (fleet children included)."""
    keys: list[str] = []
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            meta = doc.get("metadata", {})
            ns = meta.get("namespace", "default")
            if doc.get("kind") == "OABService":
                keys.append(f"{ns}/{meta['name']}")
            elif doc.get("kind") == "OABFleet":
                keys += [f"{ns}/{a['name']}" for a in doc["spec"].get("agents", [])]
    return sorted(keys)


def run(examples: Path, workdir: Path) -> int:
    """The demo proper (see the module docstring); raises :class:`DemoError` on failure."""
    _say("starting local AWS with the simulated ECS data plane ...")
    emulator = start(dataplane=True)
    cluster: LocalCluster | None = None
    try:
        emulator.apply_env()  # boto3 reads credentials and the endpoint from os.environ
        DataPlaneControl(emulator.endpoint).configure(start_delay_s=START_DELAY_S)
        # A user's own ~/.oabctl/config or OAB_* variables must not redirect the demo elsewhere.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OAB_")}
        env["OABCTL_CONFIG"] = os.devnull
        tables = TableNames()
        ddb = boto3.Session(
            aws_access_key_id=LOCAL_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        ).client("dynamodb", endpoint_url=emulator.endpoint)
        state = DynamoStateStore(bind_models(ddb, tables))

        _oabctl(["init"], env)
        cluster = LocalCluster(emulator.endpoint, log_dir=workdir / "logs", config=ClusterConfig())
        cluster.start()
        first = cluster.wait_for_leader(timeout=TAKEOVER_TIMEOUT_S)
        _say(
            f"3 replicas running: {', '.join(cluster.alive())}; leader {first.holder} "
            f"(epoch {first.epoch})"
        )

        manifests = local_examples(examples, workdir / "examples")
        _say(f"applying {examples} (networking blocks dropped: the emulator has no such VPC)")
        _oabctl(["apply", "-f", str(workdir / "examples")], env)
        keys = _agent_keys(manifests)

        def all_available() -> tuple[bool, str]:
            statuses = state.statuses()
            ready = sum(_available(statuses.get(k)) for k in keys)
            phases: dict[str, int] = {}
            for k in keys:
                phase = statuses[k].phase if k in statuses and statuses[k].phase else "Pending"
                phases[phase or "Pending"] = phases.get(phase or "Pending", 0) + 1
            detail = ", ".join(f"{n} {p}" for p, n in sorted(phases.items()))
            return ready == len(keys), f"{ready}/{len(keys)} agents Available ({detail})"

        first_wait = _wait(all_available, timeout=AVAILABLE_TIMEOUT_S)

        _say(f"killing the leader {first.holder} (SIGKILL: no handoff) ...")
        cluster.kill(first.holder)
        killed = time.monotonic()
        second = cluster.wait_for_leader(
            timeout=TAKEOVER_TIMEOUT_S, not_holder=first.holder, after_epoch=first.epoch
        )
        failover = time.monotonic() - killed
        _say(f"takeover: {second.holder} leads in epoch {second.epoch} after {failover:.1f} s")
        cluster.start_replica(first.holder)
        _say(f"{first.holder} restarted as a standby")

        ns, name = CHANGED
        key = f"{ns}/{name}"
        generation = state.read_status(key).observed_generation + 1
        _oabctl(["apply", "-f", str(_changed_manifest(workdir / "examples", workdir))], env)

        def changed() -> tuple[bool, str]:
            status = state.read_status(key)
            phase = status.phase if status else None
            gen = status.observed_generation if status else 0
            done = _available(status, generation)
            return done, f"{key}: {phase or 'Pending'} at generation {gen} (want {generation})"

        _wait(changed, timeout=AVAILABLE_TIMEOUT_S)
        rows = state.read_runlog(key, newest_first=False)
        runs = [r for r in rows if r.generation == generation] or rows[-1:]
        by = sorted({(r.replica, r.epoch) for r in runs})
        _say(
            "reconciled after the failover by "
            + ", ".join(f"{replica} (work enqueued in epoch {epoch})" for replica, epoch in by)
        )
        _oabctl(["get", "-A"], env)
        leader: LeaderInfo | None = cluster.leader()
        summary = [
            f"agents:    {len(keys)} Available in {first_wait:.1f} s "
            f"(simulated task start {START_DELAY_S:.0f} s)",
            f"leaders:   {first.holder} epoch {first.epoch} -> killed -> {second.holder} epoch "
            f"{second.epoch}" + (f" (now {leader.holder} epoch {leader.epoch})" if leader else ""),
            f"failover:  {failover:.1f} s without a leader (lease 3 s, retry 0.5 s)",
            f"change:    {key} generation {generation} Running after the failover",
        ]
        sys.stdout.write("\nsummary\n" + "\n".join(f"  {line}" for line in summary) + "\n")
        return EXIT_OK
    finally:
        if cluster is not None:
            _say("stopping the replicas ...")
            cluster.close()
        emulator.stop()
        _say("local AWS stopped")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; ``argv[0]`` may name another manifest directory."""
    examples = Path(argv[0]) if argv else EXAMPLES
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="oab-demo-") as tmp:
            return run(examples, Path(tmp))
    except DemoError as exc:
        sys.stderr.write(f"demo: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write("demo: interrupted; every process stopped\n")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
