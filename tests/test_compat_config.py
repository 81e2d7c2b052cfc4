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
