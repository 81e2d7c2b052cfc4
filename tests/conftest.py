"""One emulator for the whole session, reset before every test that asks for AWS.

``local_aws`` starts moto's server (requests serialized, see ``oab.controller.local.emulator``) in
its own process once per session and points this process's boto3 at it. ``aws`` resets it and
creates the control-plane tables, so each integration test starts from an empty account.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from oab.controller.local.emulator import LocalAWS
from oab.controller.testing import AWS
from oab.controller.testing import local_aws as start_local_aws

# Under mutation testing (mutation/run.py sets OAB_MUTATION=1) a mutant's verdict must not
# depend on which random examples Hypothesis drew: the same examples every run, none saved.
settings.register_profile("mutation", derandomize=True, database=None)
if os.environ.get("OAB_MUTATION") == "1":
    settings.load_profile("mutation")


@pytest.fixture(scope="session", autouse=True)
def _trace_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Spans from oabctl and replicas started by tests go to a session file, never ~/.oab."""
    saved = os.environ.get("OAB_TRACE_FILE")
    os.environ["OAB_TRACE_FILE"] = str(tmp_path_factory.mktemp("traces") / "traces.jsonl")
    yield
    if saved is None:
        os.environ.pop("OAB_TRACE_FILE", None)
    else:
        os.environ["OAB_TRACE_FILE"] = saved


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAWS]:
    """The session's emulator process; its environment is exported to this process."""
    saved = dict(os.environ)
    emulator = start_local_aws()
    emulator.apply_env()
    try:
        yield emulator
    finally:
        emulator.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def aws(local_aws: LocalAWS) -> AWS:
    """An empty emulated account with the control-plane tables created."""
    handle = AWS(local_aws)
    handle.reset()
    return handle
