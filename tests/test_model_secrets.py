"""Secrets in specs: token fields take only spec.secrets, literals refused, placeholders safe.

Reproduced by the issue: a literal token in spec.env satisfied ``bot_token: ${...}`` and landed in
plaintext in the task definition; a literal API key in ``config.agent.env`` landed in the S3
config.toml; the bot token was accepted in agent args and cron messages; and since OpenAB
substitutes ``${VAR}`` into config.toml's *text* before parsing it, a plain env value with a quote
and a newline rewrote the file (``[gateway] url = "wss://attacker..."``).
"""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from oab.controller.api.document import parse_document
from oab.controller.api.issues import InvalidDocument
from oab.controller.api.openab import TOKEN_FIELDS
from oab.controller.api.service import OABService
from oab.controller.core.render import render_config_toml

DISCORD_ID = "123456789012345678"
# Credential-shaped fakes (never real): each matches one shape of oab.controller.base.redact.
SLACK = "xoxb-123456789012-123456789012-FAKEfakeFAKEfake"
ANTHROPIC = "sk-ant-api03-FAKEFAKEFAKEFAKEFAKEFAKE"
GITHUB = "ghp_" + "A1b2C3d4E5" * 4
DISCORD = "MTAxMjM0NTY3ODkwMTIzNDU2Nzg5.GhIjKl." + "a" * 30


def _doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cpu": 256,
        "memory": 512,
        "taskDefinition": {"image": "ghcr.io/openabdev/openab:stable-kiro"},
        "secrets": [{"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/team/bot/t"}],
        "config": {
            "agent": {"preset": "kiro"},
            "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
        },
    }
    base.update(spec)
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": "bot", "namespace": "team"},
        "spec": base,
    }


def _issues(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidDocument) as info:
        parse_document(doc)
    return {issue.dotted: str(issue) for issue in info.value.issues}


def _config(doc: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = doc["spec"]["config"]
    return config


# --------------------------------------------------------------------------- token fields


def _platforms() -> dict[str, dict[str, Any]]:
    return {
        "discord": {"bot_token": "${TOKEN}"},
        "slack": {"bot_token": "${TOKEN}", "app_token": "${TOKEN}"},
        "gateway": {"url": "wss://gw.example.com/ws", "token": "${TOKEN}"},
        "stt": {"enabled": True, "api_key": "${TOKEN}"},
        "filestore": {"bucket": "b", "region": "us-east-1", "secret_access_key": "${TOKEN}"},
    }


@pytest.mark.parametrize(
    "field", sorted(TOKEN_FIELDS), ids=[".".join(f) for f in sorted(TOKEN_FIELDS)]
)
def test_a_token_field_may_not_refer_to_plain_env(field: tuple[str, str]) -> None:
    table, key = field
    doc = _doc(env={"TOKEN": "from-env"})
    config = _config(doc)
    config[table] = copy.deepcopy(_platforms().get(table, {key: "${TOKEN}"}))
    for other in config[table]:
        if (table, other) in TOKEN_FIELDS and other != key:
            config[table][other] = "${DISCORD_BOT_TOKEN}"
    found = _issues(doc)
    assert "a token must come from spec.secrets" in found[f"spec.config.{table}.{key}"]
    # The same placeholder backed by spec.secrets is accepted.
    doc["spec"].pop("env")
    doc["spec"]["secrets"].append({"name": "TOKEN", "source": "ssm", "path": "/oab/team/bot/x"})
    parse_document(doc)


# -------------------------------------------------------------------- secret-shaped literals


@pytest.mark.parametrize(
    ("where", "put", "secret"),
    [
        (
            "spec.env.DISCORD_BOT_TOKEN",
            lambda d, v: d["spec"].update(env={"DISCORD_BOT_TOKEN": v}),
            DISCORD,
        ),
        ("spec.env.SLACK", lambda d, v: d["spec"].update(env={"SLACK": v}), SLACK),
        (
            "spec.config.agent.env.ANTHROPIC_API_KEY",
            lambda d, v: _config(d)["agent"].update(env={"ANTHROPIC_API_KEY": v}),
            ANTHROPIC,
        ),
        (
            "spec.config.agent.args[1]",
            lambda d, v: _config(d)["agent"].update(args=["--token", v]),
            GITHUB,
        ),
        (
            "spec.config.cron.jobs[0].message",
            lambda d, v: _config(d).update(
                cron={"jobs": [{"schedule": "0 9 * * *", "channel": DISCORD_ID, "message": v}]}
            ),
            SLACK,
        ),
        (
            "spec.config.discord.bot_token",
            lambda d, v: _config(d)["discord"].update(bot_token=v),
            DISCORD,
        ),
        (
            "spec.platform.k8s.env[0].value",
            lambda d, v: d["spec"].update(platform={"k8s": {"env": [{"value": v}]}}),
            ANTHROPIC,
        ),
        (
            "metadata.annotations.note",
            lambda d, v: d["metadata"].update(annotations={"note": v}),
            GITHUB,
        ),
        ("metadata.labels.x", lambda d, v: d["metadata"].update(labels={"x": v}), SLACK),
        ("spec.platform.k8s", lambda d, v: d["spec"].update(platform={"k8s": {v: 1}}), SLACK),
    ],
)
def test_secret_shaped_literals_are_refused_anywhere(where: str, put: Any, secret: str) -> None:
    doc = _doc()
    put(doc, secret)
    with pytest.raises(InvalidDocument) as info:
        parse_document(doc)
    issues = {issue.dotted: issue for issue in info.value.issues}
    assert where in issues, sorted(issues)
    assert "looks like a" in issues[where].message
    assert "spec.secrets" in str(issues[where].hint)
    # Named by shape, never echoed.
    assert secret not in str(info.value)
    assert secret[:12] not in str(info.value)


def test_ordinary_values_are_not_mistaken_for_secrets() -> None:
    doc = _doc(
        env={"LOG_LEVEL": "info", "HASH": "0" * 64, "REGION": "us-east-1"},
        bootstrapFrom="s3://agent-state/team/bot/home.tar.gz",
    )
    doc["metadata"]["annotations"] = {"oab.dev/restartedAt": "2026-01-31T12:00:00Z"}
    _config(doc)["agent"]["args"] = ["--model", "claude-sonnet-4-5"]
    parse_document(doc)


# ------------------------------------------------------------------- placeholders into TOML


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('x"\n[gateway]\nurl = "wss://attacker.example/ws', "a double quote"),
        ("line\nbreak", "a line break"),
        ("carriage\rreturn", "a line break"),
        ("back\\slash", "a backslash"),
        ("tab\there", "a control character"),
        ("nul\x00", "a control character"),
        ("del\x7f", "a control character"),
    ],
)
def test_plain_values_substituted_into_toml_may_not_rewrite_it(value: str, says: str) -> None:
    doc = _doc(env={"CHANNEL_NOTE": value})
    _config(doc)["agent"]["env"] = {"NOTE": "${CHANNEL_NOTE}"}
    found = _issues(doc)
    assert says in found["spec.env.CHANNEL_NOTE"]
    assert "config.agent.env.NOTE" in found["spec.env.CHANNEL_NOTE"]


def test_plain_values_not_substituted_may_hold_anything_printable() -> None:
    # Only values OpenAB substitutes into config.toml are restricted; the container's own
    # environment can hold quotes.
    svc = parse_document(_doc(env={"GREETING": 'say "hi"'}))
    assert isinstance(svc, OABService)
    assert 'say "hi"' not in render_config_toml(svc)


def test_a_safe_plain_placeholder_renders_and_parses_back() -> None:
    doc = _doc(env={"RUST_LOG": "info,openab=debug"})
    _config(doc)["agent"]["env"] = {"RUST_LOG": "${RUST_LOG}"}
    svc = parse_document(doc)
    assert isinstance(svc, OABService)
    data = tomllib.loads(render_config_toml(svc))
    assert data["agent"]["env"] == {"RUST_LOG": "${RUST_LOG}"}


# ---------------------------------------------------------- secret placeholders stay in tokens


@pytest.mark.parametrize(
    ("where", "put"),
    [
        ("spec.config.agent.args[0]", lambda c: c["agent"].update(args=["${DISCORD_BOT_TOKEN}"])),
        (
            "spec.config.agent.command",
            lambda c: c["agent"].update(command="run ${DISCORD_BOT_TOKEN}"),
        ),
        (
            "spec.config.agent.env.TOKEN",
            lambda c: c["agent"].update(env={"TOKEN": "${DISCORD_BOT_TOKEN}"}),
        ),
        (
            "spec.config.agent.working_dir",
            lambda c: c["agent"].update(working_dir="/home/${DISCORD_BOT_TOKEN}"),
        ),
        (
            "spec.config.cron.jobs[0].message",
            lambda c: c.update(
                cron={
                    "jobs": [
                        {
                            "schedule": "0 9 * * *",
                            "channel": DISCORD_ID,
                            "message": "token is ${DISCORD_BOT_TOKEN}",
                        }
                    ]
                }
            ),
        ),
        (
            "spec.config.gateway.url",
            lambda c: c.update(gateway={"url": "wss://gw.example/ws?t=${DISCORD_BOT_TOKEN}"}),
        ),
        (
            "spec.config.reactions.emojis.done",
            lambda c: c.update(reactions={"emojis": {"done": "${DISCORD_BOT_TOKEN}"}}),
        ),
    ],
)
def test_secret_placeholders_only_in_token_fields(where: str, put: Any) -> None:
    doc = _doc()
    put(_config(doc))
    found = _issues(doc)
    assert "may appear only in a token field" in found[where]


def test_an_api_key_secret_reaches_the_agent_through_inherit_env() -> None:
    doc = _doc()
    doc["spec"]["secrets"].append(
        {"name": "ANTHROPIC_API_KEY", "source": "ssm", "path": "/oab/team/bot/anthropic"}
    )
    svc = parse_document(doc)
    assert isinstance(svc, OABService)
    data = tomllib.loads(render_config_toml(svc))
    assert data["agent"]["inherit_env"] == ["ANTHROPIC_API_KEY"]
    assert "DISCORD_BOT_TOKEN" not in data["agent"]["inherit_env"]


def test_fleet_token_from_env_is_blamed_on_the_fleet_field() -> None:
    fleet = {
        "apiVersion": "oab.dev/v1",
        "kind": "OABFleet",
        "metadata": {"name": "f", "namespace": "team"},
        "spec": {
            "defaults": {
                "cpu": 256,
                "memory": 512,
                "taskDefinition": {"image": "ghcr.io/openabdev/openab:stable-kiro"},
                "env": {"DISCORD_BOT_TOKEN": "from-env"},
                "config": {
                    "agent": {"preset": "kiro"},
                    "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
                },
            },
            "agents": [{"name": "a1"}],
        },
    }
    found = _issues(fleet)
    assert "a token must come from spec.secrets" in found["spec.defaults.config.discord.bot_token"]


def test_a_token_may_not_be_handed_to_the_agent_through_inherit_env() -> None:
    doc = _doc()
    _config(doc)["agent"]["inherit_env"] = ["HOME_EXTRA", "DISCORD_BOT_TOKEN"]
    found = _issues(doc)
    assert "may not be passed to the agent" in found["spec.config.agent.inherit_env[1]"]
