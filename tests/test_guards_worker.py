"""The worker's commit when a run proposes a phase the status may not move to (issue 15).

No reachable input makes the real reconciler propose an illegal phase (a Terminating agent
stays Terminating until it is cleared), so the worker's defence against such a bug is pinned
here with a reconciler double in an in-memory control plane (queue and state store twins): the
run is parked as ``IllegalTransition`` and neither the status nor the run log is written.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from oab.controller.adapters.statestore import MemoryStateStore
from oab.controller.core.outcome import Result
from oab.controller.core.status import AgentStatus, next_status
from oab.controller.runtime.worker import Worker
from oab.controller.testing import FakeClock, SequentialIds, audit_record
from oab.queue.config import QueueConfig
from oab.queue.row import State
from oab.queue.store import MemoryStore
from oab.queue.workqueue import WorkQueue, idempotency_token

KEY = "team/bot"


class _ProposesRunning:
    """A reconciler with a bug: whatever the status, it says the agent runs."""

    def reconcile(self, _req: Any, *, status: AgentStatus, **_: Any) -> Result:
        return Result(status=replace(status, phase="Running"))


def test_an_illegal_phase_parks_the_run_and_writes_no_status() -> None:
    clock = FakeClock()
    state = MemoryStateStore()
    before = AgentStatus(key=KEY)
    terminating = next_status(before, phase="Terminating")
    audit = audit_record(
        before, terminating, run_id="run-delete", outcome="requeue", at=clock.time()
    )
    state.commit(state.transition_items(before=before, after=terminating, audit=audit))
    config = QueueConfig(visibility_timeout=600.0, shards=1)
    queue = WorkQueue(
        None,
        "unused",
        config=config,
        clock=clock,
        new_id=SequentialIds("id"),
        rng=random.Random(7),
        store=MemoryStore(shards=1),
    )
    worker = Worker(
        queue=queue,
        reconciler=_ProposesRunning(),  # type: ignore[arg-type]
        state=state,
        replica_id="r1",
        monotonic=clock.monotonic,
        wall=clock.time,
    )
    queue.enqueue(KEY, 2, "apply", idempotency_token(KEY, 2, "digest", "spec"))
    claim = queue.claim("r1/w0")
    assert claim is not None
    decision = worker.process(claim)
    assert (decision.kind, decision.reason) == ("park", "IllegalTransition")
    assert state.read_status(KEY).phase == "Terminating"
    assert [row.run_id for row in state.read_runlog(KEY)] == ["run-delete"]
    assert queue.get(KEY).state is State.PARKED
