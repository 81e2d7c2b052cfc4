"""Every validation pattern matches the whole string: a trailing newline is never accepted.

``re.match`` with ``$`` accepts ``"bot\\n"`` (``$`` also matches before a final newline), which
became the ECS service ``oab-team-bot\\n``. Each case below is a valid value with ``\\n`` appended,
placed where the model reads it; the valid value itself is accepted (so the test cannot pass by
refusing everything).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from oab.controller.api.document import parse_document
from oab.controller.api.issues import InvalidDocument
from oab.controller.api.service import is_dns_label
from oab.controller.core.render import RenderContext
from oab.controller.core.settings import Settings

TOKEN = "${DISCORD_BOT_TOKEN}"


def _doc() -> dict[str, Any]:
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": "bot", "namespace": "team"},
        "spec": {
            "cpu": 256,
            "memory": 512,
            "taskDefinition": {"image": "ghcr.io/openabdev/openab:stable-kiro"},
            "secrets": [
                {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/team/bot/token"}
            ],
            "config": {"agent": {"preset": "kiro"}, "discord": {"bot_token": TOKEN}},
        },
    }


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return apply


def _add_secret(secret: dict[str, str]) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        doc["spec"]["secrets"].append(secret)

    return apply


def _env_key(key: str) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        doc["spec"]["env"] = {key: "x"}

    return apply


SM = "arn:aws:secretsmanager:us-east-1:123456789012:secret:oab/team/bot/key-AbCdEf"
ROLE = "arn:aws:iam::123456789012:role/oab-agent-task-team-bot"

# (what, a valid value, how to put a value into the document)
CASES: list[tuple[str, str, Callable[[str], Callable[[dict[str, Any]], None]]]] = [
    ("metadata.name", "bot", lambda v: _set(("metadata", "name"), v)),
    ("metadata.namespace", "team", lambda v: _set(("metadata", "namespace"), v)),
    (
        "image",
        "ghcr.io/openabdev/openab:stable-kiro",
        lambda v: _set(("spec", "taskDefinition", "image"), v),
    ),
    (
        "bootstrapFrom",
        "s3://agent-state/team/bot/home.tar.gz",
        lambda v: _set(("spec", "bootstrapFrom"), v),
    ),
    ("ssm path", "/oab/team/bot/token", lambda v: _set(("spec", "secrets", 0, "path"), v)),
    (
        "ssm arn",
        "arn:aws:ssm:us-east-1:123456789012:parameter/oab/team/bot/token",
        lambda v: _set(("spec", "secrets", 0, "path"), v),
    ),
    (
        "secretsmanager arn",
        SM,
        lambda v: _add_secret({"name": "KEY", "source": "secretsmanager", "arn": v}),
    ),
    ("secret name", "KEY", lambda v: _add_secret({"name": v, "source": "ssm", "path": "/oab/x"})),
    ("env name", "LOG_LEVEL", _env_key),
    ("task role", ROLE, lambda v: _set(("spec", "platform"), {"ecs": {"taskRole": v}})),
    (
        "role name",
        "oab-agent-task-team-bot",
        lambda v: _set(("spec", "platform"), {"ecs": {"taskRole": v}}),
    ),
    (
        "subnet",
        "subnet-0123abcd",
        lambda v: _set(("spec", "networking"), {"subnets": [v]}),
    ),
    (
        "security group",
        "sg-0123abcd",
        lambda v: _set(
            ("spec", "networking"), {"subnets": ["subnet-0123abcd"], "securityGroups": [v]}
        ),
    ),
    ("bot_token placeholder", TOKEN, lambda v: _set(("spec", "config", "discord", "bot_token"), v)),
    (
        "discord id",
        "123456789012345678",
        lambda v: _set(("spec", "config", "discord", "allowed_channels"), [v]),
    ),
    (
        "agent env name",
        "RUST_LOG",
        lambda v: _set(("spec", "config", "agent", "env"), {v: "info"}),
    ),
]


@pytest.mark.parametrize(("what", "good", "put"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("suffix", ["\n", "\r\n"], ids=["LF", "CRLF"])
def test_a_trailing_newline_is_refused(
    what: str, good: str, put: Callable[[str], Callable[[dict[str, Any]], None]], suffix: str
) -> None:
    ok = _doc()
    put(good)(ok)
    parse_document(copy.deepcopy(ok))
    bad = _doc()
    put(good + suffix)(bad)
    with pytest.raises(InvalidDocument):
        parse_document(bad)


def test_slack_ids_and_cron_fields_match_whole_strings() -> None:
    doc = _doc()
    doc["spec"]["secrets"] += [
        {"name": "SLACK_BOT_TOKEN", "source": "ssm", "path": "/oab/team/bot/slack-bot"},
        {"name": "SLACK_APP_TOKEN", "source": "ssm", "path": "/oab/team/bot/slack-app"},
    ]
    doc["spec"]["config"]["slack"] = {
        "bot_token": "${SLACK_BOT_TOKEN}",
        "app_token": "${SLACK_APP_TOKEN}",
        "allowed_channels": ["C0123ABCD"],
    }
    doc["spec"]["config"]["cron"] = {
        "jobs": [{"schedule": "0 9 * * 1-5", "channel": "C0123ABCD", "message": "hi"}]
    }
    parse_document(copy.deepcopy(doc))
    for path, value in [
        (("slack", "allowed_channels"), ["C0123ABCD\n"]),
        (("cron", "jobs"), [{"schedule": "0 9 * * 1-5\n", "channel": "C0", "message": "hi"}]),
    ]:
        bad = copy.deepcopy(doc)
        bad["spec"]["config"][path[0]][path[1]] = value
        with pytest.raises(InvalidDocument):
            parse_document(bad)


def test_is_dns_label_is_whole_string() -> None:
    assert is_dns_label("bot")
    assert not is_dns_label("bot\n")
    assert not is_dns_label("\nbot")


CONTEXT = {
    "region": "us-east-1",
    "bucket": "oab-control-plane",
    "cluster": "oab",
    "agent_image": "ghcr.io/openabdev/oab-controller:0.1.0",
    "execution_role_arn": "arn:aws:iam::{account}:role/oab-agent-exec-{namespace}-{name}",
    "task_role_arn": "arn:aws:iam::{account}:role/oab-agent-task-{namespace}-{name}",
    "account_id": "123456789012",
    "default_subnets": ("subnet-0123abcd",),
    "default_security_groups": ("sg-0123abcd",),
}


@pytest.mark.parametrize(
    ("field", "good"),
    [
        ("region", "us-east-1"),
        ("bucket", "oab-control-plane"),
        ("cluster", "oab"),
        ("cluster", "arn:aws:ecs:us-east-1:123456789012:cluster/oab"),
        ("log_group", "/oab/agents"),
        ("account_id", "123456789012"),
    ],
)
def test_render_context_fields_match_whole_strings(field: str, good: str) -> None:
    RenderContext.model_validate({**CONTEXT, field: good})
    with pytest.raises(ValidationError, match=field):
        RenderContext.model_validate({**CONTEXT, field: good + "\n"})


@pytest.mark.parametrize("field", ["default_subnets", "default_security_groups"])
def test_render_context_ids_match_whole_strings(field: str) -> None:
    good = CONTEXT[field]
    assert isinstance(good, tuple)
    with pytest.raises(ValidationError, match=field):
        RenderContext.model_validate({**CONTEXT, field: (good[0] + "\n",)})


@pytest.mark.parametrize(
    ("field", "good"),
    [("bucket", "oab-control-plane"), ("table_prefix", "oab"), ("cluster", "oab")],
)
def test_settings_fields_match_whole_strings(field: str, good: str) -> None:
    Settings.model_validate({field: good})
    with pytest.raises(ValidationError, match=field):
        Settings.model_validate({field: good + "\n"})
