"""``oabctl get`` shows an ``oab.dev/v2`` agent as applied; ``oabctl convert`` converts fleets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from oab.controller.adapters.clusterprofile import read_cluster_profile
from oab.controller.adapters.state import status_to_item
from oab.controller.api.intake import ManifestError
from oab.controller.api.manifests import load_paths, services_of
from oab.controller.api.service import OABService
from oab.controller.api.v2 import LAST_APPLIED, ConversionContext, applied_view
from oab.controller.api.v2_convert import convert_documents
from oab.controller.core.status import AgentStatus
from oab.controller.testing import AWS, oabctl, prepare_plane

ROOT = Path(__file__).resolve().parent.parent
PLANE = "oab-test-plane"
ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:oab/prod/tokens-AC80TP"
CONFIG = (
    '[agent]\ncommand = "kiro-cli"\nargs = ["acp", "--trust-all-tools"]\n\n'
    '[gateway]\nurl = "ws://openab-gateway:8080/ws"\n'
)
MANIFEST = """\
apiVersion: oab.dev/v2
kind: OABService
metadata:
  name: bot
  namespace: team
spec:
  image: ghcr.io/openabdev/openab:stable-kiro
  resources: { cpu: "256", memory: "512" }
  configFrom: ./config.toml
  runtime:
    type: ecs
    networking:
      subnets: [SUBNET]
      securityGroups: [GROUP]
"""


@pytest.fixture
def applied(aws: AWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    values = prepare_plane(aws.emulator, config=tmp_path / "oabctl.toml", bucket=PLANE)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    assert oabctl("init").code == 0
    profile = read_cluster_profile(aws.client("s3"), PLANE)
    assert profile is not None
    text = MANIFEST.replace("SUBNET", profile.subnets[0]).replace(
        "GROUP", profile.security_groups[0]
    )
    (tmp_path / "config.toml").write_text(CONFIG)
    (tmp_path / "bot.yaml").write_text(text)
    code, _, err = oabctl("apply", "-f", str(tmp_path / "bot.yaml"))
    assert code == 0, err
    status = AgentStatus(key="team/bot", phase="Running", observed_generation=1)
    aws.client("dynamodb").put_item(TableName=aws.tables.state, Item=status_to_item(status))
    return yaml.safe_load(text)  # type: ignore[no-any-return]


def test_get_shows_the_v2_document_as_applied_with_its_status(applied: dict[str, Any]) -> None:
    for fmt, parse in (("yaml", yaml.safe_load), ("json", json.loads)):
        code, out, err = oabctl("get", "bot", "-n", "team", "-o", fmt)
        assert code == 0, err
        shown = parse(out)
        assert shown["apiVersion"] == "oab.dev/v2"
        assert shown["spec"] == applied["spec"]  # configFrom as written, not the inline text
        assert shown["metadata"]["name"] == "bot"
        assert shown["metadata"]["generation"] == 1
        assert LAST_APPLIED not in json.dumps(shown)
        assert shown["status"]["phase"] == "Running"
    listed = yaml.safe_load(oabctl("get", "-n", "team", "-o", "yaml").out)
    assert [i["apiVersion"] for i in listed["items"]] == ["oab.dev/v2"]


@pytest.mark.parametrize(
    "annotation",
    [
        "not json",
        '["a list"]',
        '{"apiVersion": "oab.dev/v2", "kind": "OABService", "metadata": {"name": "other",'
        ' "namespace": "team"}, "spec": {}}',
        '{"apiVersion": "oab.dev/v1", "kind": "OABService", "metadata": {"name": "bot",'
        ' "namespace": "team"}, "spec": {}}',
    ],
)
def test_a_tampered_annotation_shows_the_internal_form(annotation: str) -> None:
    stored = {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": "bot", "namespace": "team", "annotations": {LAST_APPLIED: annotation}},
        "spec": {},
    }
    assert applied_view(stored) is None


def _load(path: Path) -> list[Any]:
    return load_paths([str(path)], context=ConversionContext(resolve_secret=None))


def test_v1_fleet_to_v2_keeps_each_agents_effective_values(tmp_path: Path) -> None:
    example = ROOT / "examples" / "fleet.yaml"
    named = convert_documents(str(example), to="oab.dev/v2").dropped
    assert "metadata.namespace ('team-a': v2 namespaces are [a-z0-9]+)" in named
    source = tmp_path / "v1.yaml"
    source.write_text(example.read_text().replace("team-a", "teama"))
    result = convert_documents(str(source), to="oab.dev/v2")
    v1_children = {c.metadata.name: c for c in services_of(_load(source)[0].obj)}
    # Named, not guessed: inline config, SSM names (the fleet's own and the Discord convention
    # goes with the config), an agent's own capacity provider.
    assert "spec.defaults.config (v2 agents take configFrom files)" in result.dropped
    assert any(d.startswith("spec.agents[3].secrets[0].path") for d in result.dropped)
    assert any(d.startswith("spec.agents[6].capacityProvider") for d in result.dropped)
    assert all(f"spec.agents[{i}].configFrom" in " ".join(result.dropped) for i in range(10))
    converted = yaml.safe_load(result.text)
    assert converted["kind"] == "OABFleet"
    # With the config files written, the v2 fleet expands to the same agents' shape.
    for agent in converted["spec"]["agents"]:
        (tmp_path / f"{agent['name']}.toml").write_text(CONFIG)
    out = tmp_path / "fleet.yaml"
    out.write_text(result.text)
    v2_children = {c.metadata.name: c for c in services_of(_load(out)[0].obj)}
    assert v2_children.keys() == v1_children.keys()
    for name, v1 in v1_children.items():
        v2 = v2_children[name]
        assert (v2.spec.cpu, v2.spec.memory) == (v1.spec.cpu, v1.spec.memory), name
        assert v2.spec.task_definition == v1.spec.task_definition, name
        assert v2.spec.networking == v1.spec.networking, name
        if name != "gemini-1":  # its own capacity provider: named above
            assert v2.spec.capacity_provider == v1.spec.capacity_provider, name


def test_v2_fleet_to_v1_writes_name_interpolation_out_names_config_and_keeps_ingress(
    tmp_path: Path,
) -> None:
    fleet = (ROOT / "examples" / "v2" / "fleet.yaml").read_text()
    fleet = fleet.replace("aws-sm://oab/prod/${name}#", f"aws-sm://{ARN}#")
    fleet = fleet.replace("    runtime:", "    bootstrapFrom: s3://state/${name}.tgz\n    runtime:")
    fleet = fleet.replace("  agents:", "    ingress: {paths: [/webhook/line]}\n  agents:")
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet)
    (v2,) = _load(path)  # valid as written
    result = convert_documents(str(path), to="oab.dev/v1")
    assert sorted(result.dropped) == [
        "spec.agents[0].configFrom (v1 fleet agents take inline config only)",
        "spec.agents[1].configFrom (v1 fleet agents take inline config only)",
    ]
    converted = yaml.safe_load(result.text)
    # v1 fleet agents need inline config: add one, then the v1 fleet expands to the same agents.
    converted["spec"]["defaults"]["config"] = {
        "agent": {"preset": "kiro"},
        "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
    }
    out = tmp_path / "v1.yaml"
    out.write_text(yaml.safe_dump(converted))
    v1_children = {c.metadata.name: c for c in services_of(_load(out)[0].obj)}
    for child in services_of(v2.obj):
        assert isinstance(child, OABService)
        v1 = v1_children[child.metadata.name]
        for field in (
            "cpu",
            "memory",
            "task_definition",
            "networking",
            "bootstrap_from",
            "ingress",
        ):
            assert getattr(v1.spec, field) == getattr(child.spec, field), field
        assert v1.spec.capacity_provider == child.spec.capacity_provider
        assert {s.name: s.arn for s in v1.spec.secrets if s.source == "secretsmanager"} == {
            s.name: s.arn for s in child.spec.secrets
        }


REFS = """\
[secrets.refs]
discord_bot_token = "{ref}"

[discord]
bot_token = "${{secrets.discord_bot_token}}"
"""


@pytest.mark.parametrize(
    ("ref", "refused"),
    [
        ("aws-sm://oab/team/bot/discord#DISCORD_BOT_TOKEN", None),  # the agent's own secret
        (f"aws-sm://{ARN.replace('prod/tokens', 'team/bot/discord')}#TOKEN", None),
        ("aws-sm://oab/shared/discord#TOKEN", None),  # allow-listed by the platform
        ("exec://get-token.sh discord", None),  # reads nothing through IAM
        ("aws-sm://oab/team/other/discord#DISCORD_BOT_TOKEN", "not one of this agent's secrets"),
        # Malformed references are refused when the file is read (the config model's check),
        # before any rendering: "load:" marks the expected message of that refusal.
        ("aws-sm://oab/team/bot/discord", "load:needs a secret id and a JSON key"),
        ("https://example.com/token", "load:unrecognized secret reference scheme"),
    ],
)
def test_config_secret_refs_stay_within_the_tenant(
    tmp_path: Path, ref: str, refused: str | None
) -> None:
    from oab.controller.core import render

    (tmp_path / "config.toml").write_text(REFS.format(ref=ref))
    manifest = MANIFEST.replace("SUBNET", "subnet-0aaa0000").replace("GROUP", "sg-0ccc0000")
    (tmp_path / "bot.yaml").write_text(manifest)
    if refused is not None and refused.startswith("load:"):
        with pytest.raises(ManifestError, match=refused.removeprefix("load:")):
            _load(tmp_path / "bot.yaml")
        return
    (doc,) = _load(tmp_path / "bot.yaml")
    ctx = render.RenderContext(
        region="us-east-1",
        bucket=PLANE,
        cluster="oab",
        agent_image="ghcr.io/openabdev/oab-controller:0.1.0",
        execution_role_arn="arn:aws:iam::{account}:role/x-{namespace}-{name}",
        task_role_arn="arn:aws:iam::{account}:role/y-{namespace}-{name}",
        account_id="123456789012",
        secret_allowlist=("arn:aws:secretsmanager:{region}:{account}:secret:oab/shared/*",),
    )
    if refused is None:
        render.render_task_definition(doc.obj, ctx)
        return
    with pytest.raises(render.RenderError, match=refused) as info:
        render.render_task_definition(doc.obj, ctx)
    assert info.value.field == "spec.configFrom"
    assert "[secrets.refs] discord_bot_token" in str(info.value)


def test_apply_refuses_a_foreign_secret_ref(applied: dict[str, Any], tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.toml").write_text(REFS.format(ref="aws-sm://oab/team/bot/discord#T"))
    (other / "bot.yaml").write_text(
        yaml.safe_dump({**applied, "metadata": {"name": "thief", "namespace": "team"}})
    )
    code, _, err = oabctl("apply", "-f", str(other / "bot.yaml"))
    assert code == 1
    assert "spec.configFrom" in err
    assert "[secrets.refs] discord_bot_token" in err
    assert oabctl("get", "thief", "-n", "team").code != 0  # nothing written
