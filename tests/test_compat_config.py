"""Upstream OpenAB's own example configs are accepted and come back unchanged.

Each file of ``tests/fixtures/openab/`` (sources and commits in its README) is checked twice:
as a verbatim config.toml (``check_config_toml``, what ``configFrom`` uses) and as ``spec.config``
of a v1 manifest, rendered by the controller's renderer and read back with tomllib. "Unchanged"
is semantic: the same TOML data (key order and comments are not data). Warnings are expected
only where the modelled release really lacks something: here, only the upstream docs' dummy ids.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from oab.controller.api.document import parse_document
from oab.controller.api.openab import (
    TOKEN_FIELDS,
    ConfigTomlError,
    OpenABConfig,
    check_config_toml,
    config_warnings,
)
from oab.controller.api.service import OABService
from oab.controller.core.render import render_config_toml

FIXTURES_DIR = Path(__file__).parent / "fixtures" / "openab"

#: file -> the warnings (dotted paths) the current model gives for it.
FIXTURES: dict[str, list[str]] = {
    "config.toml.example.toml": ["discord.allowed_channels[0]"],  # "1234567890"
    "k8s-configmap.toml": ["discord.allowed_channels[0]"],  # "YOUR_CHANNEL_ID"
    "helm-default.toml": ["discord.allowed_channels[0]"],
    "helm-all-options.toml": [],
    "helm-msteams-enterprise.toml": ["discord.allowed_channels[0]"],
    "docs-telegram.toml": [],
    "docs-line.toml": [],
    "docs-msteams-selfhosted.toml": [],
    "docs-google-chat.toml": [],
    "docs-feishu.toml": [],
    "docs-cronjob-full.toml": [],
    "docs-cronjob-multi.toml": [],
    "docs-cronjob-usercron.toml": [],
    "docs-stt-local.toml": [],
    "refarch-aws-ecs-fargate-spot.toml": [],
    "openab-0.10-tables.toml": [],
}
#: Files without ``[agent]``: valid verbatim (the image names its agent), not as spec.config.
NO_AGENT = {"docs-feishu.toml"}


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _text(name: str) -> str:
    return (FIXTURES_DIR / name).read_text(encoding="utf-8")


def test_every_fixture_is_listed() -> None:
    assert sorted(p.name for p in FIXTURES_DIR.glob("*.toml")) == sorted(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_verbatim_file_passes_with_only_the_expected_warnings(name: str) -> None:
    check = check_config_toml(_text(name), source=name, strict=False)
    assert [_dotted(w.path) for w in check.warnings] == FIXTURES[name]
    assert check.data == tomllib.loads(_text(name))
    if FIXTURES[name]:
        with pytest.raises(ConfigTomlError) as info:
            check_config_toml(_text(name), source=name, strict=True)
        assert f"{name}: {FIXTURES[name][0]}" in str(info.value)
    else:
        check_config_toml(_text(name), source=name, strict=True)


@pytest.mark.parametrize("name", sorted(set(FIXTURES) - NO_AGENT))
def test_as_spec_config_it_renders_back_to_the_same_data(name: str) -> None:
    data = tomllib.loads(_text(name))
    config = OpenABConfig.model_validate(data)
    rendered = config.to_toml_dict()
    assert rendered == data
    assert tomllib.loads(tomli_w.dumps(rendered)) == data


def _manifest(config: dict[str, Any]) -> dict[str, Any]:
    """A v1 manifest whose spec.secrets provide every token placeholder of ``config``."""
    tokens = sorted(
        {
            name
            for path, name in OpenABConfig.model_validate(config).placeholder_uses()
            if len(path) == 2 and (str(path[0]), str(path[1])) in TOKEN_FIELDS
        }
    )
    secrets = [
        {"name": name, "source": "ssm", "path": f"/oab/team/bot/{name.lower()}"} for name in tokens
    ]
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": "bot", "namespace": "team"},
        "spec": {
            "cpu": 256,
            "memory": 512,
            "taskDefinition": {"image": "ghcr.io/openabdev/openab:0.10.0-kiro"},
            "secrets": secrets,
            "config": config,
        },
    }


@pytest.mark.parametrize(
    "name", sorted(set(FIXTURES) - NO_AGENT - {"openab-0.10-tables.toml", "helm-all-options.toml"})
)
def test_whole_manifest_renders_the_same_config_toml(name: str) -> None:
    data = tomllib.loads(_text(name))
    svc = parse_document(_manifest(data))
    assert isinstance(svc, OABService)
    assert tomllib.loads(render_config_toml(svc)) == data


def test_unknown_keys_are_kept_and_warned_with_their_path() -> None:
    data = tomllib.loads(_text("refarch-aws-ecs-fargate-spot.toml"))
    data["discord"]["future_option"] = {"nested": [1, 2]}
    data["pool"]["max_sesions"] = 3  # a typo of a known key
    data["brand_new_table"] = {"x": True}
    config = OpenABConfig.model_validate(data)
    found = {_dotted(w.path): w for w in config_warnings(config)}
    assert set(found) == {"discord.future_option", "pool.max_sesions", "brand_new_table"}
    assert found["pool.max_sesions"].hint == "did you mean max_sessions?"
    assert found["discord.future_option"].hint is None
    assert "not in OpenAB 0.10.0" in found["brand_new_table"].message
    assert config.to_toml_dict() == data
    svc = parse_document(_manifest(data))
    assert isinstance(svc, OABService)
    assert tomllib.loads(render_config_toml(svc)) == data


# ------------------------------------------------------------------- check_config_toml errors

GOOD = '[discord]\nbot_token = "${DISCORD_BOT_TOKEN}"\n\n[agent]\ncommand = "kiro-cli"\n'


def _refused(text: str, *, strict: bool = False) -> ConfigTomlError:
    with pytest.raises(ConfigTomlError) as info:
        check_config_toml(text, source="bot/config.toml", strict=strict)
    return info.value


def test_a_syntax_error_names_the_file_and_line() -> None:
    err = _refused(GOOD + '\n[pool]\nmax_sessions = "3\n')
    assert err.line == 8
    assert str(err).startswith("bot/config.toml:8: not valid TOML")


def test_a_wrong_type_names_the_field() -> None:
    err = _refused(GOOD + "\n[pool]\nmax_sessions = true\n")
    assert "bot/config.toml: pool.max_sessions:" in str(err)


def test_a_literal_token_is_refused_without_echoing_it() -> None:
    secret = "MTA0NjYyNzQ4ODU1NzM4MTY0NQ.GhVq3d.abcdefghijklmnopqrstuvwxyz012345678"
    err = _refused(GOOD.replace("${DISCORD_BOT_TOKEN}", secret))
    assert "discord.bot_token" in str(err)
    assert secret not in str(err)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('[discord]\nbot_token = "${T}"\n\n[agent]\npreset = "kiro"\n', "agent.preset"),
        ('[discord]\nbot_token = "${T}"\nenabled = false\n', "discord.enabled"),
    ],
)
def test_spec_config_shorthands_are_refused_in_a_verbatim_file(text: str, path: str) -> None:
    # OpenAB would ignore them: the agent would have no command, Discord would stay on.
    err = _refused(text)
    assert path in str(err)
    assert "verbatim" in str(err)


def test_a_verbatim_file_may_omit_agent_but_not_a_platform() -> None:
    check_config_toml('[telegram]\nbot_token = "${TELEGRAM_BOT_TOKEN}"\n', source="c", strict=True)
    assert "at least one of discord" in str(_refused('[agent]\ncommand = "kiro-cli"\n'))


def test_strict_turns_warnings_into_errors() -> None:
    text = GOOD + "\n[pool]\nmax_sesions = 3\n"
    check = check_config_toml(text, source="c", strict=False)
    assert [str(w) for w in check.warnings] == [
        "pool.max_sesions: unknown key (not in OpenAB 0.10.0's config); kept in config.toml "
        "as written; did you mean max_sessions?"
    ]
    assert "refused by --strict" in str(_refused(text, strict=True))


def test_placeholders_and_secret_refs_are_reported() -> None:
    text = (
        '[discord]\nbot_token = "${secrets.discord}"\n\n[agent]\ncommand = "claude-agent-acp"\n'
        'env = { API = "${API_BASE}" }\n\n[secrets.refs]\ndiscord = "aws-sm://oab/bot#token"\n'
    )
    check = check_config_toml(text, source="c", strict=True)
    assert check.placeholders == ((("agent", "env", "API"), "API_BASE"),)
    assert check.token_placeholders == frozenset()
    assert dict(check.secret_refs) == {"discord": "aws-sm://oab/bot#token"}
    assert check.secret_ref_uses == ((("discord", "bot_token"), "discord"),)


def test_size_and_depth_are_bounded() -> None:
    assert "larger than" in str(_refused(GOOD + "# " + "x" * (256 * 1024) + "\n"))
    deep = GOOD + "\n[pool]\nx = " + "[" * 40 + "]" * 40 + "\n"
    assert "nest deeper" in str(_refused(deep))
