"""Fleets carry ``ingress``, ``exec``, ``suspend`` and ``schedules`` like single agents, and
``oabctl scale`` of a fleet member is refused naming the fleet (suspend it through the fleet).

Also the one compare-and-swap helper of the CLI (``cli.common.compare_and_swap``): ``scale``
racing an ``apply`` keeps the apply, and no CLI module imports another module's private name.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import botocore.handlers
import pytest
import yaml

from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.store import DesiredStateStore, StoredObject, object_key
from oab.controller.api.intake import ManifestError
from oab.controller.api.manifests import load_paths, services_of
from oab.controller.api.v2_convert import convert_documents
from oab.controller.testing import AWS, agent_manifest, oabctl, prepare_plane

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "oab-control-plane"

FLEET = """\
apiVersion: oab.dev/v1
kind: OABFleet
metadata:
  name: crew
  namespace: team
spec:
  defaults:
    cpu: 512
    memory: 1024
    taskDefinition:
      image: ghcr.io/openabdev/openab:0.10.0-kiro
    ingress:
      paths: [/webhook/telegram]
    exec: true
    schedules:
      - {name: night, expr: "cron(0 22 ? * MON-FRI *)", timezone: Europe/Berlin, replicas: 0}
      - {name: morning, expr: "cron(0 7 ? * MON-FRI *)", timezone: Europe/Berlin, replicas: 1}
    config:
      agent: {preset: kiro}
      discord:
        bot_token: ${DISCORD_BOT_TOKEN}
        allowed_channels: ["123456789012345678"]
  agents:
    - name: alpha
    - name: beta
      ingress:
        paths: [/webhook/line, /webhook/telegram]
        containerPort: 9000
      exec: false
      suspend: true
      schedules: []
"""


def _load(tmp_path: Path, text: str) -> list[Any]:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return load_paths([str(path)])


def _children(tmp_path: Path, text: str) -> dict[str, Any]:
    (doc,) = _load(tmp_path, text)
    return {c.metadata.name: c.spec for c in services_of(doc.obj)}


def test_fleet_defaults_reach_every_agent_and_an_agent_replaces_them_whole(
    tmp_path: Path,
) -> None:
    children = _children(tmp_path, FLEET)
    alpha, beta = children["alpha"], children["beta"]
    assert alpha.ingress is not None
    assert (alpha.ingress.paths, alpha.ingress.container_port) == (["/webhook/telegram"], 8080)
    assert alpha.exec is True
    assert alpha.suspend is None
    assert [s.name for s in alpha.schedules or []] == ["night", "morning"]
    # The agent's values replace the defaults' (whole lists; no ${name} in paths: own API).
    assert beta.ingress is not None
    assert (beta.ingress.paths, beta.ingress.container_port) == (
        ["/webhook/line", "/webhook/telegram"],
        9000,
    )
    assert beta.exec is False
    assert beta.suspend is True
    assert beta.schedules == []


def test_a_fleet_without_them_expands_and_dumps_as_before(tmp_path: Path) -> None:
    (doc,) = _load(tmp_path, (ROOT / "examples" / "fleet.yaml").read_text())
    dumped = doc.obj.spec.model_dump(mode="json", by_alias=True)
    new = {"ingress", "exec", "suspend", "schedules"}
    assert not new & set(dumped["defaults"])  # fleet spec digests unchanged on upgrade
    assert not any(new & set(agent) for agent in dumped["agents"])
    for child in services_of(doc.obj):
        assert not new & set(child.to_manifest()["spec"]), child.metadata.name


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("cron(0 22 ? * MON-FRI *)", "cron(0 22 * * *)", "spec.defaults.schedules[0].expr"),
        ("      exec: false\n", "      exec: maybe\n", "spec.agents[1].exec"),
        ("paths: [/webhook/line, /webhook/telegram]", "paths: [webhook]", "spec.agents[1].ingress"),
    ],
)
def test_bad_values_in_a_fleet_name_the_fleet_field(
    tmp_path: Path, old: str, new: str, path: str
) -> None:
    assert old in FLEET
    with pytest.raises(ManifestError) as caught:
        _load(tmp_path, FLEET.replace(old, new))
    assert path in str(caught.value)


def test_convert_keeps_fleet_ingress_and_names_what_v2_cannot_hold(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    result = convert_documents(str(path), to="oab.dev/v2")
    converted = yaml.safe_load(result.text)
    assert converted["spec"]["template"]["ingress"]["paths"] == ["/webhook/telegram"]
    assert converted["spec"]["agents"][1]["ingress"]["containerPort"] == 9000
    lost = set(result.dropped)
    assert {
        "spec.defaults.exec (oab.dev/v2 has no exec)",
        "spec.defaults.schedules (oab.dev/v2 has no schedules)",
        "spec.agents[1].suspend (oab.dev/v2 has no suspend)",
    } <= lost
    assert not [d for d in lost if "ingress" in d]
    # A single agent's exec is named too (it was dropped without a word).
    single = tmp_path / "bot.yaml"
    single.write_text(agent_manifest().replace("spec:\n", "spec:\n  exec: true\n", 1))
    assert (
        "spec.exec (oab.dev/v2 has no exec)"
        in convert_documents(str(single), to="oab.dev/v2").dropped
    )


# --------------------------------------------------------------------- oabctl scale on AWS


@pytest.fixture
def env(aws: AWS, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, **prepare_plane(aws.emulator, config=tmp_path / "none", init=True)}


def _stored(aws: AWS, name: str) -> StoredObject:
    store = DesiredStateStore(S3ObjectStore(aws.client("s3"), BUCKET))
    obj = store.get(object_key("OABService", "team", name))
    assert obj is not None
    return obj


def test_scale_of_a_fleet_member_is_refused_naming_the_fleet(aws: AWS, env: dict[str, str]) -> None:
    assert oabctl("apply", "-f", "-", stdin=FLEET, env=env).code == 0
    assert _stored(aws, "beta").spec["suspend"] is True  # suspended through the fleet
    before = _stored(aws, "alpha").generation
    result = oabctl("scale", "alpha", "0", "-n", "team", env=env)
    assert result.code == 1
    assert "owned by fleet 'crew'" in result.err
    assert "edit or delete fleet 'crew' instead" in result.err
    assert _stored(aws, "alpha").generation == before
    assert "suspend" not in _stored(aws, "alpha").spec


def test_scale_is_compare_and_swap(
    aws: AWS, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An apply racing between scale's read and its write is kept, not overwritten."""
    assert oabctl("apply", "-f", "-", stdin=agent_manifest(tag="v1"), env=env).code == 0
    raced = {"done": False}

    def race(params: dict[str, Any], **_: Any) -> None:
        body = params.get("Body", b"")
        if not raced["done"] and isinstance(body, bytes) and b"suspend" in body:
            raced["done"] = True  # the racing user, after scale read generation 1
            assert oabctl("apply", "-f", "-", stdin=agent_manifest(tag="v2"), env=env).code == 0

    # At the AWS boundary: every botocore session created from here on (the CLI builds its
    # own clients) runs the racing apply just before scale's PutObject is sent.
    monkeypatch.setattr(
        botocore.handlers,
        "BUILTIN_HANDLERS",
        [*botocore.handlers.BUILTIN_HANDLERS, ("provide-client-params.s3.PutObject", race)],
    )
    result = oabctl("scale", "bot", "0", "-n", "team", env=env)
    assert result.code == 0, result.err
    assert raced["done"]
    obj = _stored(aws, "bot")
    assert obj.generation == 3  # the racing apply (2), then scale re-read and wrote (3)
    assert obj.spec["taskDefinition"]["image"].endswith(":v2")  # the racing apply survived
    assert obj.spec["suspend"] is True


def test_no_cli_module_imports_a_private_name_of_another_module() -> None:
    """Shared CLI helpers are public in cli.common (compare_and_swap was private in cli.ops)."""
    offenders = []
    for path in sorted((ROOT / "controller" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("oab."):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    offenders.append(f"{path.name}: {node.module} {private}")
    assert offenders == []
