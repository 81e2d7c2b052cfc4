"""One error hierarchy (issue 12): every named error of the controller derives from
``OabError`` and says whether retrying can help; refused input is ``InvalidInput`` (terminal, and
still a ``ValueError`` for the callers that catch that); one name per concept."""

from __future__ import annotations

import pytest

from oab.controller.adapters import snapshots
from oab.controller.adapters.ratelimit import BucketConfig, RateLimiter, RateLimitTimeout
from oab.controller.api import service
from oab.controller.api.cronexpr import CronError, parse_cron
from oab.controller.api.intake import ManifestError
from oab.controller.api.issues import InvalidDocument
from oab.controller.api.openab import ConfigTomlError
from oab.controller.api.schedule import ScheduleError
from oab.controller.api.service import AgentKey
from oab.controller.api.v2 import ConfigFileInvalid
from oab.controller.base.errors import InvalidInput, OabError, RetryableError, TerminalError
from oab.controller.core.outcome import decide
from oab.controller.core.snapshot import MalformedSnapshotRecord
from oab.controller.local.dataplane_control import ControlRequestError, DataPlaneError
from oab.controller.local.demo import DemoError
from oab.controller.testing import FakeClock

INVALID_INPUT = (
    ManifestError,
    CronError,
    ScheduleError,
    InvalidDocument,
    ConfigTomlError,
    ConfigFileInvalid,
)


@pytest.mark.parametrize("cls", INVALID_INPUT, ids=lambda c: c.__name__)
def test_refused_input_is_terminal_and_still_a_value_error(cls: type[Exception]) -> None:
    assert issubclass(cls, InvalidInput)
    assert issubclass(cls, TerminalError)
    assert issubclass(cls, ValueError)
    assert not cls.retryable  # type: ignore[attr-defined]
    assert cls.reason not in ("Error", "TerminalError", "InvalidInput")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "cls",
    [RateLimitTimeout, DataPlaneError, ControlRequestError, DemoError, MalformedSnapshotRecord],
    ids=lambda c: c.__name__,
)
def test_every_named_error_has_the_one_root(cls: type[Exception]) -> None:
    assert issubclass(cls, OabError)


def test_a_bad_cron_expression_is_caught_by_either_base() -> None:
    with pytest.raises(OabError) as caught:
        parse_cron("cron(99 * * * ? *)")
    assert isinstance(caught.value, CronError | ValueError)
    assert decide(error=caught.value).kind == "park"


def test_a_rate_limit_timeout_is_retried_under_its_own_reason() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        {"ecs": BucketConfig(rate=0.001, burst=1)},
        monotonic=clock.monotonic,
        sleep=clock.advance,
    )
    limiter.acquire("ecs")
    with pytest.raises(RetryableError) as caught:
        limiter.acquire("ecs", timeout=1.0)
    assert isinstance(caught.value, RateLimitTimeout)
    decision = decide(error=caught.value)
    assert (decision.kind, decision.reason) == ("retry", "RateLimitTimeout")


def test_a_refused_snapshot_record_has_one_name() -> None:
    assert not hasattr(snapshots, "UnreadableRecord")
    with pytest.raises(MalformedSnapshotRecord, match="not valid JSON"):
        snapshots.parse_record(b"{nope", agent=AgentKey("team/bot"))


def test_condition_is_one_type_each() -> None:
    """``Condition`` is the status model's (core/status.py); the API schema's is
    ``StatusCondition``."""
    assert not hasattr(service, "Condition")
    assert "StatusCondition" in service.__all__
