"""``oab.dev/v2`` manifests (upstream OpenAB's shape): accepted, converted, config delivered
verbatim, errors that name the file, line, field and fix."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import pytest

from oab.controller.adapters.configsource import ConfigObjects
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.store import DesiredStateStore, desired_from
from oab.controller.api.manifests import ManifestError, load_paths, services_of
from oab.controller.api.service import AgentKey, OABService
from oab.controller.api.v2 import LAST_APPLIED, ConversionContext, V2Fleet
from oab.controller.api.v2_convert import convert_documents
from oab.controller.core import render
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.testing import AWS

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:oab/prod/my-bot/tg-AC80TP"
# Upstream's minimal Telegram manifest (docs/oabctl.md), with well-formed subnet/sg ids and a
# local configFrom.
SINGLE = f"""\
apiVersion: oab.dev/v2
kind: OABService
metadata:
  name: my-bot
  namespace: prod
spec:
  image: ghcr.io/openabdev/openab:stable-kiro
  resources: {{ cpu: "256", memory: "512" }}
  configFrom: ./config.toml
  secrets:
    TELEGRAM_BOT_TOKEN: "aws-sm://oab/prod/my-bot/tg#TELEGRAM_BOT_TOKEN"
    TELEGRAM_SECRET_TOKEN: "{ARN}:TELEGRAM_SECRET_TOKEN::"
  runtime:
    type: ecs
    capacityProvider: FARGATE_SPOT
    architecture: ARM64
    networking:
      subnets: [subnet-0aaa0000, subnet-0bbb0000]
      securityGroups: [sg-0ccc0000]
  ingress:
    paths:
      - /webhook/telegram
"""
# Comments, odd spacing and a non-ASCII emoji: the agent must get exactly these bytes.
CONFIG = (
    '# my bot\n[telegram]\nwebhook_path   = "/webhook/telegram"\n'
    'bot_token = "${TELEGRAM_BOT_TOKEN}"\nsecret_token = "${TELEGRAM_SECRET_TOKEN}"\n\n'
    '[agent]\ncommand = "kiro-cli"\nargs = ["acp", "--trust-all-tools"]\n'
    '[reactions.emojis]\ncoding = "\U0001f468\U0001f4bb"\n'
)
# manifest.rs's fleet test: ${name} and an ingress override that wins.
FLEET = f"""\
apiVersion: oab.dev/v2
kind: OABFleet
metadata:
  name: bots
  namespace: prod
spec:
  template:
    image: img:tag
    runtime:
      type: ecs
      capacityProvider: FARGATE_SPOT
      networking:
        subnets: ["subnet-0aaa0000"]
        securityGroups: ["sg-0ccc0000"]
    ingress:
      paths: ["/webhook/telegram"]
    secrets:
      TOKEN: "aws-sm://{ARN}#${{name}}"
  agents:
    - name: fromtemplate
      configFrom: s3://b-cfg/${{name}}.toml
    - name: overridden
      configFrom: s3://b-cfg/${{name}}.toml
      resources: {{ cpu: "1024", memory: "2048" }}
      ingress:
        cloudMapNamespace: custom
        paths: ["/webhook/line"]
"""


def resolver(secret_id: str) -> str:
    return f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{secret_id}-AbCdEf"


def write(tmp_path: Path, manifest: str, config: str | bytes = CONFIG) -> Path:
    (tmp_path / "config.toml").write_bytes(config.encode() if isinstance(config, str) else config)
    path = tmp_path / "bot.yaml"
    path.write_text(manifest)
    return path


def load(path: Path, **kwargs: Any) -> list[Any]:
    ctx = ConversionContext(resolve_secret=kwargs.pop("resolve", resolver))
    return load_paths([str(path)], context=ctx)


def test_upstream_single_manifest_becomes_the_internal_service(tmp_path: Path) -> None:
    (doc,) = load(write(tmp_path, SINGLE))
    svc = doc.obj
    assert isinstance(svc, OABService)
    spec = svc.spec
    assert (spec.cpu, spec.memory, spec.capacity_provider) == (256, 512, "FARGATE_SPOT")
    assert spec.platform
    assert spec.platform.ecs
    assert spec.platform.ecs.architecture == "ARM64"
    assert spec.ingress is not None
    assert spec.ingress.paths == ["/webhook/telegram"]
    assert spec.ingress.container_port == 8080
    assert spec.ingress.cloud_map_namespace == "oab"
    arns = {s.name: s.arn for s in spec.secrets if s.source == "secretsmanager"}
    assert arns == {
        "TELEGRAM_BOT_TOKEN": resolver("oab/prod/my-bot/tg") + ":TELEGRAM_BOT_TOKEN::",
        "TELEGRAM_SECRET_TOKEN": ARN + ":TELEGRAM_SECRET_TOKEN::",
    }
    # What the user wrote is kept for `get -o yaml`.
    assert '"configFrom":"./config.toml"' in svc.metadata.annotations[LAST_APPLIED]


def test_local_config_reaches_the_artifact_byte_for_byte(tmp_path: Path) -> None:
    (doc,) = load(write(tmp_path, SINGLE))
    text = render.render_config_toml(doc.obj)
    assert text.encode() == CONFIG.encode()
    # The init container checks the artifact against this digest: same bytes, same digest.
    assert render.artifact_key(doc.obj).endswith("/config.toml")


def test_a_changed_local_config_is_a_new_generation(aws: AWS, tmp_path: Path) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="oab-v2-store")
    store = DesiredStateStore(S3ObjectStore(s3, "oab-v2-store"))
    (doc,) = load(write(tmp_path, SINGLE))
    assert store.apply(desired_from(doc.obj)).generation == 1
    (same,) = load(write(tmp_path, SINGLE))
    assert store.apply(desired_from(same.obj)).outcome == "unchanged"
    (changed,) = load(write(tmp_path, SINGLE, CONFIG + "# edited\n"))
    assert store.apply(desired_from(changed.obj)).generation == 2
    # The controller reads back the stored text verbatim.
    manifest = StoreManifests(store).read(AgentKey("prod/my-bot"))
    assert manifest is not None
    assert render.render_config_toml(manifest.service) == CONFIG + "# edited\n"


def test_upstream_fleet_expands_with_name_interpolation_and_overrides(tmp_path: Path) -> None:
    (doc,) = load(write(tmp_path, FLEET))
    fleet = doc.obj
    assert isinstance(fleet, V2Fleet)
    first, second = services_of(fleet)
    assert first.spec.config_from == "s3://b-cfg/fromtemplate.toml"
    assert second.spec.config_from == "s3://b-cfg/overridden.toml"
    assert (first.spec.cpu, first.spec.memory) == (256, 512)  # upstream's default
    assert (second.spec.cpu, second.spec.memory) == (1024, 2048)
    assert first.spec.ingress
    assert first.spec.ingress.paths == ["/webhook/telegram"]
    assert second.spec.ingress
    assert second.spec.ingress.cloud_map_namespace == "custom"
    assert [s.arn for s in first.spec.secrets if s.source == "secretsmanager"] == [
        f"{ARN}:fromtemplate::"
    ]
    assert first.metadata.labels == {"oab.dev/fleet": "bots"}
    stored = desired_from(fleet)
    assert stored.api_version == "oab.dev/v2"
    assert "template" in stored.spec


def issues(path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load(path, **kwargs)
    return [str(i) for i in info.value.issues]


def test_toml_syntax_error_names_the_config_file_and_line(tmp_path: Path) -> None:
    (problem,) = issues(write(tmp_path, SINGLE, '[agent]\ncommand = "kiro-cli"\nargs = [\n'))
    assert problem.startswith(f"{tmp_path / 'config.toml'}:3")
    assert "not valid TOML" in problem
    assert "bot.yaml, document 1" in problem


def test_undeclared_placeholder_is_refused_with_its_line(tmp_path: Path) -> None:
    config = CONFIG + '[stt]\napi_key = "${GROQ_API_KEY}"\n'
    (problem,) = issues(write(tmp_path, SINGLE, config))
    line = config.splitlines().index('api_key = "${GROQ_API_KEY}"') + 1
    assert problem.startswith(f"{tmp_path / 'config.toml'}:{line}")
    assert "${GROQ_API_KEY} is not declared" in problem
    assert "spec.secrets" in problem


def test_secret_literal_in_a_token_field_is_refused(tmp_path: Path) -> None:
    token = "xoxb-" + "1234567890-1234567890-" + "abcdefghijklmnopqrstuvwx"
    (problem,) = issues(write(tmp_path, SINGLE, f'[slack]\nbot_token = "{token}"\n'))
    assert "slack.bot_token" in problem
    assert "a token must be a ${" in problem
    assert token not in problem
    assert token not in problem


def test_bare_secret_name_needs_the_resolver(tmp_path: Path) -> None:
    (problem,) = issues(write(tmp_path, SINGLE), resolve=None)
    assert "spec.secrets.TELEGRAM_BOT_TOKEN" in problem
    assert "DescribeSecret" in problem


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("namespace: prod", "namespace: pr-od", "metadata.namespace"),
        ('cpu: "256"', 'cpu: "300"', "spec.resources.cpu"),
        ("architecture: ARM64", "architecture: arm64", "spec.runtime.architecture"),
        ("- /webhook/telegram", "- webhook", "spec.ingress.paths[0]"),
        ("type: ecs", "type: kubernetes", "spec.runtime"),
        ("  image: ghcr", "  imag: ghcr", "spec.imag"),
    ],
)
def test_upstream_rules_name_the_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    problems = issues(write(tmp_path, SINGLE.replace(old, new)))
    assert any(f" {field}" in p for p in problems), problems


def test_convert_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path, SINGLE.replace("aws-sm://oab/prod/my-bot/tg", "aws-sm://" + ARN))
    v1 = convert_documents(str(path), to="oab.dev/v1")
    assert v1.dropped == []
    v1_path = tmp_path / "v1.yaml"
    v1_path.write_text(v1.text)
    (as_v1,) = load(v1_path)
    (as_v2,) = load(path)
    assert as_v1.obj.spec == as_v2.obj.spec
    back = convert_documents(str(v1_path), to="oab.dev/v2")
    # configToml has no inline v2 form: named, never guessed.
    assert back.dropped == ["spec.configToml"]


def test_convert_names_what_v2_cannot_express(tmp_path: Path) -> None:
    path = tmp_path / "v1.yaml"
    path.write_text((Path(__file__).parent.parent / "examples" / "kiro-discord.yaml").read_text())
    result = convert_documents(str(path), to="oab.dev/v2")
    assert "spec.config" in result.dropped


def test_s3_config_object_is_read_and_a_new_version_changes_the_task(aws: AWS) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="oab-v2-cfg")
    s3.put_bucket_versioning(Bucket="oab-v2-cfg", VersioningConfiguration={"Status": "Enabled"})
    s3.create_bucket(Bucket="oab-v2-store")
    store = DesiredStateStore(S3ObjectStore(s3, "oab-v2-store"))
    s3.put_object(Bucket="oab-v2-cfg", Key="bot.toml", Body=CONFIG.encode())
    manifest = textwrap.dedent(SINGLE).replace("./config.toml", "s3://oab-v2-cfg/bot.toml")
    docs = load_paths(
        ["-"],
        stdin=io.StringIO(manifest),
        context=ConversionContext(resolve_secret=resolver),
    )
    store.apply(desired_from(docs[0].obj))
    manifests = StoreManifests(
        store, configs=ConfigObjects(s3, control_plane_bucket="oab-v2-store")
    )
    ctx = render.RenderContext(
        region="us-east-1",
        bucket="oab-control-plane",
        cluster="oab",
        agent_image="ghcr.io/openabdev/oab-controller:0.1.0",
        execution_role_arn="arn:aws:iam::{account}:role/x-{namespace}-{name}",
        task_role_arn="arn:aws:iam::{account}:role/y-{namespace}-{name}",
        account_id="123456789012",
        secret_allowlist=("arn:aws:secretsmanager:*:*:secret:oab/*",),
    )

    def task_hash() -> str:
        read = manifests.read(AgentKey("prod/my-bot"))
        assert read is not None
        assert (
            render.render_config_toml(read.service)
            == s3.get_object(Bucket="oab-v2-cfg", Key="bot.toml")["Body"].read().decode()
        )
        return render.task_definition_hash(render.render_task_definition(read.service, ctx))

    before = task_hash()
    assert task_hash() == before  # same object version: same task, no rollout
    s3.put_object(Bucket="oab-v2-cfg", Key="bot.toml", Body=(CONFIG + "# v2\n").encode())
    assert task_hash() != before  # a new version is a new task definition: a rollout
