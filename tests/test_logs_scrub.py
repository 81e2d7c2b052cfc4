"""Every log line of oab-controller, oabctl and oab-agent is scrubbed (issue 11, item 6).

Secrets are planted in each place a record carries text (message, arguments, ``extra`` fields by
name and by value, nested fields, the exception and its chained cause, the stack) and the
emitted lines must hold none of them, in the daemon's JSON and text formats, on ``oabctl``'s
stderr and on ``oab-agent``'s.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oab.controller.agent import main as agent
from oab.controller.base import taskcontract
from oab.controller.base.redact import REDACTED
from oab.controller.cli import main as cli
from oab.controller.observability import logscrub
from oab.controller.runtime import daemon
from oab.controller.testing import AWS

# Built from parts so that no scanner mistakes this file for a leaked credential.
ANTHROPIC = "sk-" + "ant-api03-" + "Ab3dE" * 8
GITHUB = "ghp" + "_" + "a1B2c3D4e5" * 4
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
SLACK_APP = "xapp" + "-1-A0123456789-1234567890123-" + "abcdef0123456789"
# No credential shape at all: only the field names give these away.
BY_NAME = ["plain-app-token-value", "plain-secret-value", "plain-password-value", "plain-kv-value"]
PLANTED = [ANTHROPIC, GITHUB, AWS_SECRET, SLACK_APP, *BY_NAME]


@pytest.fixture
def clean_logging() -> Iterator[None]:
    """Leave the root logger and ``lastResort`` as they were (the code under test rewires them)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    last = logging.lastResort
    last_filters = list(last.filters) if last is not None else []
    yield
    root.handlers = handlers
    root.setLevel(level)
    if last is not None:
        last.filters = last_filters


def emit_everything(log: logging.Logger) -> None:
    """One record per place a secret can hide."""
    log.warning("booting with " + ANTHROPIC)
    log.warning("token %s for %s", GITHUB, "team-a/bot")
    log.warning(
        "extra fields",
        extra={
            "app_token": BY_NAME[0],
            "secret": BY_NAME[1],
            "note": f"the key is {AWS_SECRET}",
            "params": {"password": BY_NAME[2], "depth": [{"ok": SLACK_APP}]},
            "replica": "r1",
        },
    )
    try:
        try:
            raise KeyError(GITHUB)
        except KeyError as inner:
            raise RuntimeError(f"call failed: Authorization=Bearer {ANTHROPIC}") from inner
    except RuntimeError:
        log.exception("reconcile failed, token=%s", BY_NAME[3])
    log.warning("a stack, and %s", SLACK_APP, stack_info=True)
    log.warning("%d bad arguments", "not a number " + AWS_SECRET)


def assert_clean(text: str) -> None:
    assert text.strip(), "nothing was logged"
    for secret in PLANTED:
        # Not even a telling part: pydantic, for one, echoes inputs cut to their ends.
        assert secret[:16] not in text, f"{secret[:8]}... leaked"
    assert REDACTED in text


def test_daemon_json_lines_are_scrubbed(
    clean_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    daemon._setup_logging("json", "INFO", "r1")
    emit_everything(logging.getLogger("oab.controller.test"))
    text = err.getvalue()
    assert_clean(text)
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 6
    fields = lines[2]
    assert fields["app_token"] == fields["secret"] == REDACTED
    assert fields["replica"] == "r1"
    assert REDACTED in fields["note"]
    assert "'password': '[REDACTED]'" in fields["params"]
    failed = lines[3]
    assert failed["msg"] == f"reconcile failed, token={REDACTED}"
    assert "RuntimeError: call failed" in failed["exc"]
    assert "KeyError" in failed["exc"]  # the chained cause is kept, scrubbed
    assert "stack" in lines[4]
    assert "could not be formatted" in lines[5]["msg"]


def test_daemon_text_lines_are_scrubbed(
    clean_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    daemon._setup_logging("text", "INFO", "r1")
    emit_everything(logging.getLogger("oab.controller.test"))
    text = err.getvalue()
    assert_clean(text)
    assert "Traceback (most recent call last)" in text
    assert "Stack (most recent call last)" in text


def test_json_formatter_scrubs_even_without_the_filter() -> None:
    record = logging.makeLogRecord(
        {"msg": "token %s", "args": (GITHUB,), "levelname": "INFO", "bot_token": BY_NAME[0]}
    )
    line = daemon.JsonFormatter().format(record)
    assert GITHUB not in line
    assert BY_NAME[0] not in line


def test_oabctl_stderr_warnings_are_scrubbed(clean_logging: None) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["--help"], stdout=out, stderr=err) == 0
    emit_everything(logging.getLogger("oab.controller.some_library"))
    assert_clean(err.getvalue())
    # A second run replaces its handler instead of stacking another one.
    err2 = io.StringIO()
    cli.main(["--help"], stdout=out, stderr=err2)
    logging.getLogger("oab.controller.x").warning("once " + GITHUB)
    assert err2.getvalue().count("once") == 1
    assert "once" not in err.getvalue()


def test_other_root_handlers_and_last_resort_are_scrubbed_too(clean_logging: None) -> None:
    captured = io.StringIO()
    root = logging.getLogger()
    root.addHandler(logging.StreamHandler(captured))
    logscrub.install_root(stream=io.StringIO())
    logging.getLogger("x").warning("value %s", ANTHROPIC)
    assert ANTHROPIC not in captured.getvalue()
    assert logging.lastResort is not None
    assert any(isinstance(f, logscrub.ScrubbingFilter) for f in logging.lastResort.filters)


def test_long_messages_are_bounded_without_keeping_half_a_secret() -> None:
    cut = logscrub.MAX_MESSAGE_CHARS - 10
    record = logging.makeLogRecord({"msg": "x" * cut + " " + ANTHROPIC + " " + "y" * 100_000})
    logscrub.scrub_record(record)
    assert len(record.msg) < logscrub.MAX_MESSAGE_CHARS + 100
    assert "more characters dropped" in record.msg
    assert ANTHROPIC[:10] not in record.msg


def test_oab_agent_logs_and_errors_are_scrubbed(
    clean_logging: None,
    aws: AWS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3: Any = aws.client("s3")
    s3.create_bucket(Bucket="cp-logs")
    s3.put_object(Bucket="cp-logs", Key="artifacts/t/b/1/config.toml", Body=b"[agent]\n")
    monkeypatch.setenv("OAB_SHARED_DIR", str(tmp_path / "oab"))
    monkeypatch.setenv(taskcontract.ENV_CONFIG_ARTIFACT, "s3://cp-logs/artifacts/t/b/1/config.toml")
    # A key that happens to hold a token: the "does not exist yet" warning names it.
    monkeypatch.setenv(taskcontract.ENV_BOOTSTRAP_FROM, f"s3://cp-logs/{GITHUB}/home.tar.gz")
    assert agent.main(["init"]) == 0
    monkeypatch.setenv(taskcontract.ENV_BOOTSTRAP_FROM, f"s3://cp-logs/{ANTHROPIC}/home.tar.gz")
    monkeypatch.setenv(taskcontract.ENV_CONFIG_SHA256, ANTHROPIC)  # invalid: the error echoes it
    monkeypatch.setenv(taskcontract.ENV_CONFIG_ARTIFACT, f"s3://cp-logs/x?token={BY_NAME[0]}")
    assert agent.main(["init"]) == agent.EX_CONFIG
    logging.getLogger("oab.controller.agent.main").error("late %s", SLACK_APP)
    err = capsys.readouterr().err
    assert "does not exist yet" in err
    assert "invalid settings" in err
    assert_clean(err)
