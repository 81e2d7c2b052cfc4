"""Unit tests of spec.config: OpenAB's real config.toml keys, presets, legacy keys, rendering."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import tomli_w
from pydantic import ValidationError

from oab.controller.api.openab import PRESETS, OpenABConfig, config_warnings

DISCORD_ID = "123456789012345678"


def cfg(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "agent": {"preset": "kiro"},
        "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
    }
    data.update(sections)
    return data


def errors(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{dotted loc: error}`` of a rejected config."""
    with pytest.raises(ValidationError) as info:
        OpenABConfig.model_validate(data)
    out = {}
    for err in info.value.errors():
        # A validator may name the field below its location in ctx["path"].
        parts = [str(p) for p in err["loc"]] + [str((err.get("ctx") or {}).get("path") or "")]
        loc = ".".join(p for p in parts if p)
        out[loc] = err
    return out


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_expand_and_explicit_values_win(preset: str) -> None:
    known = PRESETS[preset]
    agent = OpenABConfig.model_validate(cfg(agent={"preset": preset})).to_toml_dict()["agent"]
    assert agent["command"] == known.command
    assert agent["args"] == list(known.args)
    assert agent["working_dir"] == known.working_dir
    assert "preset" not in agent
    custom = {"preset": preset, "command": "my-cli", "args": [], "working_dir": "/w"}
    agent = OpenABConfig.model_validate(cfg(agent=custom)).to_toml_dict()["agent"]
    assert (agent["command"], agent["args"], agent["working_dir"]) == ("my-cli", [], "/w")


def test_agent_needs_a_command_or_preset() -> None:
    assert "agent" in errors(cfg(agent={"args": ["x"]}))
    plain = OpenABConfig.model_validate(cfg(agent={"command": "echo"})).to_toml_dict()["agent"]
    assert plain == {"command": "echo", "args": []}


def test_backend_maps_to_preset_and_conflicts_are_errors() -> None:
    agent = OpenABConfig.model_validate(cfg(agent={"backend": "codex"})).to_toml_dict()["agent"]
    assert agent["command"] == "codex-acp"
    assert "backend" not in agent
    found = errors(cfg(agent={"backend": "codex", "preset": "kiro"}))
    assert "contradicts" in found["agent"]["msg"]
    assert "agent.preset" in errors(cfg(agent={"preset": "vim"}))


@pytest.mark.parametrize(
    ("data", "loc", "hint_word"),
    [
        (cfg(agent={"preset": "kiro", "model": "sonnet"}), "agent.model", "agent.args"),
        (cfg(discord={"bot_token": "${T}", "botId": "1"}), "discord.botId", "trusted_bot_ids"),
        (
            cfg(discord={"bot_token": "${T}", "guildId": "1"}),
            "discord.guildId",
            "allowed_channels",
        ),
        (cfg(steering=["a.md"]), "steering", "bootstrapFrom"),
        (cfg(memory={"x": 1}), "memory", "bootstrapFrom"),
        (cfg(tools=["git"]), "tools", "agent.args"),
    ],
)
def test_record_keys_without_openab_meaning_explain_what_to_write(
    data: dict[str, Any], loc: str, hint_word: str
) -> None:
    err = errors(data)[loc]
    assert err["type"] == "unsupported_key"
    assert hint_word in err["ctx"]["hint"]


def test_discord_enabled_and_channel_ids() -> None:
    # enabled: false drops the table (even incomplete); another platform is then required.
    data = cfg(discord={"enabled": False}, slack={"bot_token": "${A}", "app_token": "${B}"})
    rendered = OpenABConfig.model_validate(data).to_toml_dict()
    assert "discord" not in rendered
    found = errors(cfg(discord={"enabled": False}))
    assert [err["type"] for err in found.values()] == ["missing_platform"]
    on = cfg(discord={"enabled": True, "bot_token": "${T}", "channelIds": [DISCORD_ID]})
    rendered = OpenABConfig.model_validate(on).to_toml_dict()
    assert rendered["discord"] == {"bot_token": "${T}", "allowed_channels": [DISCORD_ID]}
    both = cfg(
        discord={"bot_token": "${T}", "channelIds": [DISCORD_ID], "allowed_channels": [DISCORD_ID]}
    )
    assert "both set" in errors(both)["discord"]["msg"]
    assert "discord.enabled" in errors(cfg(discord={"enabled": "yes", "bot_token": "${T}"}))


def test_needs_a_chat_platform() -> None:
    found = errors({"agent": {"preset": "kiro"}})
    assert any(err["type"] == "missing_platform" for err in found.values())
    OpenABConfig.model_validate({"agent": {"command": "x"}, "gateway": {"url": "ws://gw:8080/ws"}})


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        (123456789012345678, "id_not_string"),
        (1.2345678901234568e17, "id_not_string"),
        (True, "id_type"),
        ("123456789012345678\n", "discord_id"),
        ("1234 5678", "discord_id"),
        ("", "discord_id"),
    ],
)
def test_discord_ids_must_be_quoted_strings(value: Any, error_type: str) -> None:
    for key in ("allowed_channels", "allowed_users", "trusted_bot_ids", "allowed_role_ids"):
        found = errors(cfg(discord={"bot_token": "${T}", key: [value]}))
        err = found[f"discord.{key}.0"]
        assert err["type"] == error_type
        if error_type == "id_not_string":
            assert "quote" in err["ctx"]["hint"]


@pytest.mark.parametrize("value", ["12345", "YOUR_CHANNEL_ID", "abc123456789012345678"])
def test_ids_of_the_wrong_shape_are_warnings(value: str) -> None:
    # OpenAB's own examples carry ids such as YOUR_CHANNEL_ID: accepted, never matched.
    config = OpenABConfig.model_validate(
        cfg(discord={"bot_token": "${T}", "allowed_channels": [DISCORD_ID, value]})
    )
    (warning,) = config_warnings(config)
    assert warning.path == ("discord", "allowed_channels", 1)
    assert "not a discord id" in warning.message
    assert "17-20 digit" in (warning.hint or "")
    assert config.to_toml_dict()["discord"]["allowed_channels"] == [DISCORD_ID, value]


def test_slack_ids_and_tokens() -> None:
    good = {"bot_token": "${A}", "app_token": "${B}", "allowed_channels": ["C0123ABCD"]}
    OpenABConfig.model_validate(cfg(slack=good))
    found = errors(cfg(slack={**good, "allowed_users": [12345], "allowed_channels": ["C0\tX"]}))
    assert found["slack.allowed_users.0"]["type"] == "id_not_string"
    assert found["slack.allowed_channels.0"]["type"] == "slack_id"
    config = OpenABConfig.model_validate(cfg(slack={**good, "allowed_channels": ["general"]}))
    assert [w.path for w in config_warnings(config)] == [("slack", "allowed_channels", 0)]
    assert "slack.app_token" in errors(cfg(slack={"bot_token": "${A}"}))
    # allowed_role_ids is Discord's: on Slack it is an unknown key, kept and warned about.
    config = OpenABConfig.model_validate(cfg(slack={**good, "allowed_role_ids": []}))
    assert [w.path for w in config_warnings(config)] == [("slack", "allowed_role_ids")]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("discord", "bot_token"),
        ("slack", "bot_token"),
        ("slack", "app_token"),
        ("gateway", "token"),
        ("stt", "api_key"),
    ],
)
def test_literal_tokens_rejected_without_echoing_them(section: str, key: str) -> None:
    bases = {
        "discord": {"bot_token": "${T}"},
        "slack": {"bot_token": "${A}", "app_token": "${B}"},
        "gateway": {"url": "wss://gw/ws"},
        "stt": {"enabled": True},
    }
    secret = "xoxb-super-secret-value"
    data = cfg(**{section: {**bases[section], key: secret}})
    with pytest.raises(ValidationError) as info:
        OpenABConfig.model_validate(data)
    (err,) = info.value.errors()
    assert err["type"] == "literal_secret"
    assert secret not in str(info.value)
    assert secret not in repr(info.value.errors(include_input=False))
    # Partial placeholders are not placeholders either.
    data = cfg(**{section: {**bases[section], key: "Bot ${T}"}})
    assert errors(data)[f"{section}.{key}"]["type"] == "literal_secret"


@pytest.mark.parametrize(
    ("section", "value", "loc"),
    [
        ("discord", {"allow_bot_messages": "some"}, "discord.allow_bot_messages"),
        ("discord", {"allow_user_messages": "everyone"}, "discord.allow_user_messages"),
        ("discord", {"message_processing_mode": "batch"}, "discord.message_processing_mode"),
        ("discord", {"max_bot_turns": 1001}, "discord.max_bot_turns"),
        ("discord", {"max_bot_turns": 0}, "discord.max_bot_turns"),
        ("discord", {"max_buffered_messages": 0}, "discord.max_buffered_messages"),
        ("discord", {"max_batch_tokens": -1}, "discord.max_batch_tokens"),
        ("discord", {"allow_dm": "yes"}, "discord.allow_dm"),
        ("pool", {"liveness_check_secs": 0}, "pool.liveness_check_secs"),
        ("pool", {"max_sessions": "10"}, "pool.max_sessions"),
        ("markdown", {"tables": "html"}, "markdown.tables"),
        ("reactions", {"timing": {"debounce_ms": -5}}, "reactions.timing.debounce_ms"),
        ("reactions", {"tool_display": "verbose"}, "reactions.tool_display"),
        ("gateway", {"allow_bot_messages": "all"}, "gateway.allow_bot_messages"),
        ("cron", {"usercron_enabled": "yes"}, "cron.usercron_enabled"),
        ("stt", {"echo_transcript": 1}, "stt.echo_transcript"),
        ("gateway", {"url": "http://gw"}, "gateway.url"),
        ("stt", {"base_url": "ftp://x"}, "stt.base_url"),
    ],
)
def test_enums_and_ranges(section: str, value: dict[str, Any], loc: str) -> None:
    bases: dict[str, dict[str, Any]] = {
        "discord": {"bot_token": "${T}"},
        "gateway": {"url": "ws://gw/ws"},
    }
    data = cfg(**{section: {**bases.get(section, {}), **value}})
    assert loc in errors(data)


def test_yaml_off_and_booleans_map_onto_openab_words() -> None:
    data = cfg(
        discord={"bot_token": "${T}", "allow_bot_messages": False},
        markdown={"tables": False},
    )
    rendered = OpenABConfig.model_validate(data).to_toml_dict()
    assert rendered["discord"]["allow_bot_messages"] == "off"
    assert rendered["markdown"]["tables"] == "off"
    data["discord"]["allow_bot_messages"] = True
    assert (
        OpenABConfig.model_validate(data).to_toml_dict()["discord"]["allow_bot_messages"] == "all"
    )
    assert "markdown.tables" in errors(cfg(markdown={"tables": True}))


def test_stall_soft_before_hard() -> None:
    timing = {"stall_soft_ms": 40_000, "stall_hard_ms": 30_000}
    found = errors(cfg(reactions={"timing": timing}))
    assert found["reactions.timing"]["type"] == "stall_order"


def test_cron_jobs() -> None:
    job = {"schedule": "0 9 * * 1-5", "channel": DISCORD_ID, "message": "standup"}
    rendered = OpenABConfig.model_validate(cfg(cron={"jobs": [job]})).to_toml_dict()
    assert rendered["cron"] == {"jobs": [job]}
    assert "cron.jobs.0.schedule" in errors(cfg(cron={"jobs": [{**job, "schedule": "daily"}]}))
    assert "cron.jobs.0.schedule" in errors(cfg(cron={"jobs": [{**job, "schedule": "* * *"}]}))
    bad_channel = errors(cfg(cron={"jobs": [{**job, "channel": 123456789012345678}]}))
    assert bad_channel["cron.jobs.0.channel"]["type"] == "id_not_string"
    assert "cron.jobs.0.message" in errors(cfg(cron={"jobs": [{**job, "message": ""}]}))


def test_inherit_env_gets_agent_secrets_but_not_placeholder_only_tokens() -> None:
    data = cfg(agent={"preset": "claude", "inherit_env": ["HOME_EXTRA"]})
    rendered = OpenABConfig.model_validate(data).to_toml_dict(
        ["DISCORD_BOT_TOKEN", "ANTHROPIC_API_KEY", "HOME_EXTRA", "ANTHROPIC_API_KEY"]
    )
    assert rendered["agent"]["inherit_env"] == ["HOME_EXTRA", "ANTHROPIC_API_KEY"]


def test_placeholders_found_everywhere() -> None:
    data = cfg(
        agent={"command": "x", "env": {"K": "${KEY}", "B": "pre-${OTHER}-post"}},
        gateway={"url": "ws://gw/${GW_PATH}", "token": "${GW}"},
    )
    config = OpenABConfig.model_validate(data)
    assert config.placeholders() == {"KEY", "OTHER", "DISCORD_BOT_TOKEN", "GW_PATH", "GW"}
    assert (("agent", "env", "K"), "KEY") in config.placeholder_uses()


def test_rendered_dict_round_trips_through_toml() -> None:
    data = cfg(
        agent={"preset": "kiro", "env": {"RUST_LOG": "info"}},
        discord={
            "bot_token": "${DISCORD_BOT_TOKEN}",
            "allowed_channels": [DISCORD_ID],
            "allow_all_users": True,
            "max_bot_turns": 20,
        },
        pool={"max_sessions": 3},
        reactions={"enabled": True, "emojis": {"done": "✅"}, "timing": {"debounce_ms": 700}},
        stt={"enabled": True, "api_key": "${GROQ}", "model": "whisper-large-v3-turbo"},
        cron={"jobs": [{"schedule": "*/5 * * * *", "channel": DISCORD_ID, "message": "hi"}]},
    )
    rendered = OpenABConfig.model_validate(data).to_toml_dict(["GROQ", "DISCORD_BOT_TOKEN"])
    assert list(rendered) == ["discord", "agent", "pool", "reactions", "stt", "cron"]
    assert tomllib.loads(tomli_w.dumps(rendered)) == rendered
    assert "inherit_env" not in rendered["agent"]


# ------------------------------------------------------------------ OpenAB 0.10 additions


def _service(config: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": "bot", "namespace": "team"},
        "spec": {
            "cpu": 256,
            "memory": 512,
            "taskDefinition": {"image": "ghcr.io/openabdev/openab:0.10.0-kiro"},
            "secrets": [
                {"name": n, "source": "ssm", "path": f"/oab/team/bot/{n.lower()}"} for n in secrets
            ],
            "config": config,
        },
    }


@pytest.mark.parametrize(
    ("table", "secrets", "wired"),
    [
        ({"discord": {}}, ["DISCORD_BOT_TOKEN"], {"bot_token": "${DISCORD_BOT_TOKEN}"}),
        (
            {"slack": {"allowed_channels": ["C0123ABCD"]}},
            ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"],
            {
                "allowed_channels": ["C0123ABCD"],
                "bot_token": "${SLACK_BOT_TOKEN}",
                "app_token": "${SLACK_APP_TOKEN}",
            },
        ),
        ({"telegram": {}}, ["TELEGRAM_BOT_TOKEN"], {"bot_token": "${TELEGRAM_BOT_TOKEN}"}),
    ],
)
def test_a_declared_conventional_secret_fills_the_missing_token(
    table: dict[str, Any], secrets: list[str], wired: dict[str, Any]
) -> None:
    from oab.controller.api.document import parse_document
    from oab.controller.api.service import OABService

    config = {"agent": {"preset": "kiro"}, **table}
    svc = parse_document(_service(config, [*secrets, "ANTHROPIC_API_KEY"]))
    assert isinstance(svc, OABService)
    rendered = svc.spec.config_toml_dict()
    (name,) = table
    assert rendered[name] == wired
    # The token is consumed by config.toml, so it is not handed to the agent; other secrets are.
    assert rendered["agent"]["inherit_env"] == ["ANTHROPIC_API_KEY"]


def test_token_wiring_never_overrides_and_never_invents_tables() -> None:
    from oab.controller.api.openab import wire_conventional_tokens

    config = {"discord": {"bot_token": "${OTHER}"}, "agent": {"preset": "kiro"}}
    assert wire_conventional_tokens(config, ["DISCORD_BOT_TOKEN", "SLACK_BOT_TOKEN"]) == config
    assert wire_conventional_tokens({"discord": {}}, []) == {"discord": {}}
    disabled = {"discord": {"enabled": False}}
    assert wire_conventional_tokens(disabled, ["DISCORD_BOT_TOKEN"]) == disabled


@pytest.mark.parametrize(
    ("key", "spellings"),
    [
        ("message_processing_mode", ["per-thread", "PER_THREAD", "per_lane", "Per-Message"]),
        ("allow_user_messages", ["multibot-mentions", "multibot_mentions", "INVOLVED"]),
        ("allow_bot_messages", ["none", "false", "true", "ALL", "Mentions"]),
    ],
)
def test_openab_spellings_are_accepted_and_kept(key: str, spellings: list[str]) -> None:
    for value in spellings:
        data = cfg(discord={"bot_token": "${T}", key: value})
        assert OpenABConfig.model_validate(data).to_toml_dict()["discord"][key] == value


def test_the_seven_refused_keys_of_issue_13_are_known() -> None:
    data = cfg(
        gateway={
            "url": "ws://gw:8080/ws",
            "message_processing_mode": "per-thread",
            "max_buffered_messages": 10,
            "max_batch_tokens": 24000,
        },
        reactions={"tool_display": "compact"},
        stt={"enabled": True, "api_key": "${GROQ_API_KEY}", "echo_transcript": True},
        cron={"usercron_enabled": True, "usercron_path": "cronjob.toml"},
    )
    config = OpenABConfig.model_validate(data)
    assert config_warnings(config) == []
    rendered = config.to_toml_dict()
    assert rendered["gateway"]["max_batch_tokens"] == 24000
    assert rendered["cron"] == {"usercron_enabled": True, "usercron_path": "cronjob.toml"}


def test_stt_not_needed_is_the_only_literal_api_key() -> None:
    ok = cfg(stt={"enabled": True, "api_key": "not-needed", "base_url": "http://localhost:8080/v1"})
    assert OpenABConfig.model_validate(ok).to_toml_dict()["stt"]["api_key"] == "not-needed"
    assert errors(cfg(stt={"api_key": "gsk_live_value"}))["stt.api_key"]["type"] == (
        "literal_secret"
    )


JOB = {"schedule": "0 9 * * MON-FRI", "channel": "C0123ABCD", "message": "hi"}


@pytest.mark.parametrize(
    ("data", "loc", "says"),
    [
        (cfg(cron={"jobs": [{**JOB, "platform": "gateway"}]}), "cron.jobs.0.platform", "literal"),
        (
            cfg(cron={"jobs": [{**JOB, "platform": "slack"}]}),
            "cron.jobs[0].platform",
            "not configured",
        ),
        (
            {
                "agent": {"preset": "kiro"},
                "slack": {"bot_token": "${A}", "app_token": "${B}"},
                "cron": {"jobs": [JOB]},
            },
            "cron.jobs[0]",
            '"discord" is not configured (the default platform)',
        ),
        (
            cfg(googlechat={}, cron={"jobs": [{**JOB, "platform": "googlechat"}]}),
            "cron.jobs[0].platform",
            "not configured",
        ),
        (
            cfg(cron={"jobs": [{**JOB, "disable_on_success": True}]}),
            "cron.jobs.0.disable_on_success",
            "usercron",
        ),
        (
            cfg(cron={"jobs": [{**JOB, "teams_tenant_id": "t"}]}),
            "cron.jobs.0.teams_tenant_id",
            "teams",
        ),
    ],
)
def test_cron_platform_rules(data: dict[str, Any], loc: str, says: str) -> None:
    found = errors(data)
    assert loc in found, found
    assert says in (found[loc]["msg"] + found[loc]["type"])


def test_cron_platform_configured_is_accepted() -> None:
    slack = {"bot_token": "${A}", "app_token": "${B}"}
    OpenABConfig.model_validate(cfg(slack=slack, cron={"jobs": [{**JOB, "platform": "slack"}]}))
    gchat = {"enabled": True}
    OpenABConfig.model_validate(
        cfg(googlechat=gchat, cron={"jobs": [{**JOB, "platform": "googlechat"}]})
    )


def test_mcp_refuses_unknown_keys_like_openab() -> None:
    assert errors(cfg(mcp={"listen": "127.0.0.1:8848", "port": 1}))["mcp.port"]["type"] == (
        "extra_forbidden"
    )
    assert "removed" in errors(cfg(mcp={"acp_servers": [{"name": "x"}]}))["mcp.acp_servers"]["msg"]
    assert "mcp.listen" in errors(cfg(mcp={"listen": "0.0.0.0:8848"}))


def test_secret_refs_must_exist_and_use_known_schemes() -> None:
    refs = {"refs": {"tok": "aws-sm://oab/bot#token"}}
    good = cfg(discord={"bot_token": "${secrets.tok}"}, secrets=refs)
    config = OpenABConfig.model_validate(good)
    assert config.secret_refs() == {"tok": "aws-sm://oab/bot#token"}
    missing = errors(cfg(discord={"bot_token": "${secrets.nope}"}, secrets=refs))
    assert "names no key of [secrets.refs]" in missing["discord.bot_token"]["msg"]
    assert "secrets.refs.x" in errors(cfg(secrets={"refs": {"x": "vault://a"}}))
    assert "secrets.refs.x" in errors(cfg(secrets={"refs": {"x": "aws-sm://no-key"}}))


def test_unknown_values_must_be_toml() -> None:
    assert "discord.extra" in errors(cfg(discord={"bot_token": "${T}", "extra": None}))


def test_cursor_preset() -> None:
    agent = OpenABConfig.model_validate(cfg(agent={"preset": "cursor"})).to_toml_dict()["agent"]
    assert agent == {"command": "cursor-agent", "args": ["acp"], "working_dir": "/home/agent"}
