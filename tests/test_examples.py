"""The shipped examples load, expand and validate against the shipped JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from oab.controller.api.fleet import OABFleet, expand_fleet
from oab.controller.api.manifests import load_paths
from oab.controller.api.schema import SCHEMA_FILE, schema_dict, schema_json
from oab.controller.api.service import OABService
from oab.controller.base.names import FLEET_LABEL

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_examples_cover_the_three_required_cases() -> None:
    docs = load_paths([str(EXAMPLES)])
    services = [d.obj for d in docs if isinstance(d.obj, OABService)]
    fleets = [d.obj for d in docs if isinstance(d.obj, OABFleet)]
    kiro_discord = [
        s for s in services if s.spec.config.agent.preset == "kiro" and s.spec.config.discord
    ]
    claude_slack = [
        s for s in services if s.spec.config.agent.preset == "claude" and s.spec.config.slack
    ]
    assert kiro_discord
    assert claude_slack
    (fleet,) = fleets
    children = expand_fleet(fleet)
    assert len(children) == 10
    assert {c.metadata.labels[FLEET_LABEL] for c in children} == {fleet.metadata.name}
    assert len({c.spec.config.agent.preset for c in children}) >= 4


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_validates_against_json_schema(path: Path) -> None:
    validator = jsonschema.Draft202012Validator(schema_dict())
    for doc in yaml.safe_load_all(path.read_text()):
        errors = sorted(validator.iter_errors(doc), key=str)
        assert not errors, errors[0]


def test_schema_rejects_what_the_api_rejects_structurally() -> None:
    validator = jsonschema.Draft202012Validator(schema_dict())
    doc = next(yaml.safe_load_all((EXAMPLES / "kiro-discord.yaml").read_text()))
    assert validator.is_valid(doc)
    for mutate in (
        lambda d: d["spec"].update(replicasX=1),
        lambda d: d.update(kind="Other"),
        lambda d: d.pop("apiVersion"),
        lambda d: d["spec"]["config"]["agent"].update(model="x"),
        lambda d: d["spec"]["config"]["discord"].update(allow_bot_messages="some"),
    ):
        bad = json.loads(json.dumps(doc))
        mutate(bad)
        assert not validator.is_valid(bad)


def test_schema_is_valid_and_shipped_copy_is_current() -> None:
    jsonschema.Draft202012Validator.check_schema(schema_dict())
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_json(), (
        "regenerate with: .venv/bin/python -m oab.controller.api.schema"
    )
