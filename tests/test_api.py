"""Unit tests of the oab.dev/v1 models: every rule, valid and invalid, with field paths."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from oab.controller.api.document import parse_document
from oab.controller.api.fleet import OABFleet, expand_fleet
from oab.controller.api.issues import InvalidDocument
from oab.controller.api.service import FARGATE_MEMORY, OABService, ecs_name_rivals
from oab.controller.base.names import FLEET_LABEL, ecs_name

TOKEN_PATH = "/oab/default/bot/discord-token"


def service(**spec_overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": "bot"},
        "spec": {
            "cpu": 512,
            "memory": 1024,
            "taskDefinition": {"image": "ghcr.io/openabdev/openab:stable-kiro"},
            "secrets": [{"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": TOKEN_PATH}],
            "config": {
                "agent": {"preset": "kiro"},
                "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
            },
        },
    }
    doc["spec"].update(spec_overrides)
    return doc


def issues_of(doc: Any) -> dict[str, str]:
    with pytest.raises(InvalidDocument) as info:
        parse_document(doc)
    return {issue.dotted: f"{issue.message}; {issue.hint}" for issue in info.value.issues}


def test_minimal_service_parses_with_defaults() -> None:
    obj = parse_document(service())
    assert isinstance(obj, OABService)
    assert obj.key == "default/bot"
    assert obj.spec.replicas == 1
    assert obj.spec.capacity_provider == "FARGATE"
    assert obj.status is None


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("kiro-1", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("Kiro", False),
        ("-a", False),
        ("a-", False),
        ("a_b", False),
        ("a.b", False),
        ("", False),
    ],
)
def test_names_and_namespaces_are_dns_labels(name: str, ok: bool) -> None:
    for key in ("name", "namespace"):
        doc = service()
        doc["metadata"] = {"name": "bot", key: name} if key == "namespace" else {"name": name}
        if ok:
            parse_document(doc)
        else:
            assert "DNS label" in issues_of(doc)[f"metadata.{key}"]


def test_unknown_fields_are_errors_at_every_level() -> None:
    doc = service()
    doc["spec"]["bogus"] = 1
    doc["metadata"]["extra"] = 1
    doc["spec"]["taskDefinition"]["cpu"] = 1
    found = issues_of(doc)
    for path in (
        "spec.bogus",
        "metadata.extra",
        "spec.taskDefinition.cpu",
    ):
        assert found[path].startswith("unknown field")


@pytest.mark.parametrize("replicas", [0, 2, 10])
def test_replicas_other_than_one_rejected(replicas: int) -> None:
    assert "only 1 is valid" in issues_of(service(replicas=replicas))["spec.replicas"]


def test_every_fargate_pair_accepted_and_neighbours_rejected() -> None:
    for cpu, memories in FARGATE_MEMORY.items():
        for memory in memories:
            parse_document(service(cpu=cpu, memory=memory))
        assert (
            "not a valid Fargate memory"
            in issues_of(service(cpu=cpu, memory=memories[-1] + 1))["spec.memory"]
        )
    assert "256, 512" in issues_of(service(cpu=300))["spec.cpu"]
    assert "1024..4096 in steps of 1024" in issues_of(service(cpu=512, memory=512))["spec.memory"]


def test_numbers_must_be_integers_not_strings_or_bools() -> None:
    assert "spec.cpu" in issues_of(service(cpu="512"))
    assert "spec.replicas" in issues_of(service(replicas=True))


@pytest.mark.parametrize(
    ("secret", "field"),
    [
        ({"name": "lower", "source": "ssm", "path": "/a"}, "name"),
        ({"name": "1X", "source": "ssm", "path": "/a"}, "name"),
        ({"name": "X", "source": "ssm", "path": "no spaces"}, "path"),
        ({"name": "X", "source": "ssm", "path": "arn:aws:ssm:us-east-1:12:parameter/x"}, "path"),
        ({"name": "X", "source": "secretsmanager", "arn": "arn:aws:ssm:x"}, "arn"),
        ({"name": "X", "source": "ssm", "arn": "arn:aws:secretsmanager:x"}, "arn"),
        ({"name": "X", "source": "ssm"}, "path"),
    ],
)
def test_bad_secrets_point_at_the_field(secret: dict[str, str], field: str) -> None:
    doc = service()
    doc["spec"]["secrets"].append(secret)
    assert f"spec.secrets[1].{field}" in issues_of(doc)


@pytest.mark.parametrize(
    "secret",
    [
        {"name": "X", "source": "ssm", "path": "/oab/default/bot/x"},
        {"name": "X", "source": "ssm", "path": "plain-name"},
        {"name": "X", "source": "ssm", "path": "arn:aws:ssm:us-east-1:123456789012:parameter/a/b"},
        {
            "name": "X",
            "source": "secretsmanager",
            "arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:oab/x-AbCdEf",
        },
        {
            "name": "X",
            "source": "secretsmanager",
            "arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:oab/x-AbCdEf:token::",
            "autoRestart": True,
        },
    ],
)
def test_good_secrets_accepted(secret: dict[str, Any]) -> None:
    doc = service()
    doc["spec"]["secrets"].append(secret)
    parse_document(doc)


def test_secret_source_is_required_and_checked() -> None:
    doc = service()
    doc["spec"]["secrets"][0]["source"] = "vault"
    assert "ssm or secretsmanager" in issues_of(doc)["spec.secrets[0]"]
    del doc["spec"]["secrets"][0]["source"]
    assert "needs a source" in issues_of(doc)["spec.secrets[0]"]


def test_duplicate_secret_names_rejected() -> None:
    doc = service()
    doc["spec"]["secrets"].append(dict(doc["spec"]["secrets"][0]))
    assert "declared twice" in issues_of(doc)["spec.secrets[1].name"]


def test_env_names_reserved_and_secret_collisions() -> None:
    assert "spec.env.lower" in issues_of(service(env={"lower": "x"}))
    assert (
        "set by the controller"
        in issues_of(service(env={"CONFIG_ARTIFACT_PATH": "x"}))["spec.env.CONFIG_ARTIFACT_PATH"]
    )
    assert (
        "both a secret"
        in issues_of(service(env={"DISCORD_BOT_TOKEN": "x"}))["spec.env.DISCORD_BOT_TOKEN"]
    )


def test_placeholders_need_a_provider() -> None:
    doc = service(secrets=[])
    assert "DISCORD_BOT_TOKEN} is not provided" in issues_of(doc)["spec.config.discord.bot_token"]
    doc["spec"]["config"]["agent"]["env"] = {"API": "${API_KEY}"}
    doc["spec"]["secrets"] = service()["spec"]["secrets"]
    assert "spec.config.agent.env.API" in issues_of(doc)
    # A plain env variable is a valid provider too.
    doc["spec"]["env"] = {"API_KEY": "not-secret"}
    parse_document(doc)


def test_bootstrap_from_must_be_s3_uri() -> None:
    parse_document(service(bootstrapFrom="s3://bucket-1/agents/bot.tar.gz"))
    assert "s3://" in issues_of(service(bootstrapFrom="https://x/y"))["spec.bootstrapFrom"]


def test_networking_ids_checked() -> None:
    good = {"subnets": ["subnet-0123abcd"], "securityGroups": ["sg-0123abcd"]}
    parse_document(service(networking=good))
    bad = {"subnets": ["subnet-xyz"], "securityGroups": ["sg-0123abcd", "group"]}
    found = issues_of(service(networking=bad))
    assert {"spec.networking.subnets[0]", "spec.networking.securityGroups[1]"} <= set(found)
    assert "spec.networking.subnets" in issues_of(service(networking={"subnets": []}))


def test_platform_ecs_is_strict_and_overrides_top_level() -> None:
    top = {"subnets": ["subnet-0123abcd"]}
    over = {"subnets": ["subnet-9999abcd"], "assignPublicIp": True}
    doc = service(
        networking=top,
        capacityProvider="FARGATE",
        platform={
            "ecs": {
                "capacityProvider": "FARGATE_SPOT",
                "executionRole": "arn:aws:iam::123456789012:role/exec",
                "taskRole": "task-role",
                "networking": over,
            },
            "k8s": {"nodeSelector": {"pool": "a"}, "anything": [1, 2]},
        },
    )
    obj = parse_document(doc)
    assert isinstance(obj, OABService)
    ecs = obj.spec.effective_ecs()
    assert ecs.capacity_provider == "FARGATE_SPOT"
    assert ecs.execution_role == "arn:aws:iam::123456789012:role/exec"
    assert ecs.task_role == "task-role"
    assert ecs.networking is not None
    assert ecs.networking.subnets == ["subnet-9999abcd"]
    # Non-ECS platform keys are kept verbatim.
    assert obj.to_manifest()["spec"]["platform"]["k8s"] == {
        "nodeSelector": {"pool": "a"},
        "anything": [1, 2],
    }
    doc["spec"]["platform"]["ecs"]["memory"] = 1
    assert "spec.platform.ecs.memory" in issues_of(doc)


def test_without_platform_top_level_fields_apply() -> None:
    obj = parse_document(service(capacityProvider="FARGATE_SPOT"))
    assert isinstance(obj, OABService)
    ecs = obj.spec.effective_ecs()
    assert (ecs.capacity_provider, ecs.execution_role, ecs.networking) == (
        "FARGATE_SPOT",
        None,
        None,
    )
    assert "spec.capacityProvider" in issues_of(service(capacityProvider="EC2"))


def test_snake_case_keys_also_accepted_and_paths_use_the_written_key() -> None:
    doc = service()
    doc["spec"]["task_definition"] = doc["spec"].pop("taskDefinition")
    parse_document(doc)
    doc["spec"]["task_definition"]["image"] = "Bad Image"
    assert "spec.task_definition.image" in issues_of(doc)


def test_api_version_and_kind_checked_first() -> None:
    doc = service()
    doc["apiVersion"] = "oab.dev/v9"
    assert "oab.dev/v1" in issues_of(doc)["apiVersion"]
    doc = service()
    doc["kind"] = "Deployment"
    assert "OABService or" in issues_of(doc)["kind"]
    assert issues_of(["not", "a", "mapping"]) == {
        "(document)": "a manifest must be a mapping, got a list; None"
    }


def test_spec_digest_ignores_metadata_and_spelling_but_not_spec() -> None:
    a = parse_document(service())
    b_doc = service()
    b_doc["metadata"]["labels"] = {"x": "y"}
    b_doc["spec"]["config"]["discord"]["channelIds"] = ["123456789012345678"]
    c_doc = service()
    c_doc["spec"]["config"]["discord"]["allowed_channels"] = ["123456789012345678"]
    b, c = parse_document(b_doc), parse_document(c_doc)
    assert isinstance(a, OABService)
    assert isinstance(b, OABService)
    assert isinstance(c, OABService)
    assert b.spec_digest() == c.spec_digest() != a.spec_digest()
    assert len(a.spec_digest()) == 64


def test_status_shape_round_trips() -> None:
    doc = service()
    doc["metadata"].update(
        generation=3, deletionTimestamp="2026-01-01T00:00:00Z", finalizers=["oab.dev/ecs"]
    )
    doc["status"] = {
        "phase": "Running",
        "observedGeneration": 3,
        "taskArns": ["arn:aws:ecs:us-east-1:123456789012:task/c/abc"],
        "lastReconciled": "2026-01-01T00:00:00Z",
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "TasksRunning",
                "message": "1/1",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    obj = parse_document(doc)
    assert isinstance(obj, OABService)
    assert obj.metadata.deletion_timestamp is not None
    again = parse_document(obj.to_manifest())
    assert again == obj
    doc["status"]["phase"] = "Sleeping"
    doc["status"]["conditions"][0]["status"] = "yes"
    found = issues_of(doc)
    assert {"status.phase", "status.conditions[0].status"} <= set(found)
    doc = service()
    doc["metadata"]["generation"] = 0
    assert "metadata.generation" in issues_of(doc)


def fleet(agents: list[dict[str, Any]], **defaults: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cpu": 512,
        "memory": 1024,
        "taskDefinition": {"image": "img:kiro"},
        "config": {
            "agent": {"preset": "kiro"},
            "discord": {"bot_token": "${DISCORD_BOT_TOKEN}", "allowed_channels": ["1" * 18]},
        },
    }
    base.update(defaults)
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABFleet",
        "metadata": {"name": "fl", "namespace": "team", "labels": {"owner": "me"}},
        "spec": {"defaults": base, "agents": agents},
    }


def test_fleet_expansion_golden() -> None:
    obj = parse_document(
        fleet(
            [
                {"name": "a"},
                {
                    "name": "b",
                    "cpu": 1024,
                    "memory": 2048,
                    "image": "img:claude",
                    "config": {"agent": {"preset": "claude"}, "discord": {"max_bot_turns": 5}},
                    "secrets": [{"name": "ANTHROPIC_API_KEY", "source": "ssm", "path": "/k"}],
                    "env": {"MODE": "x"},
                    "labels": {"tier": "gold"},
                },
            ],
            env={"MODE": "default", "OTHER": "1"},
        )
    )
    assert isinstance(obj, OABFleet)
    a, b = (child.to_manifest() for child in expand_fleet(obj))
    assert a == {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {
            "name": "a",
            "namespace": "team",
            "labels": {"owner": "me", FLEET_LABEL: "fl"},
            "annotations": {},
            "finalizers": [],
        },
        "spec": {
            "replicas": 1,
            "cpu": 512,
            "memory": 1024,
            "taskDefinition": {"image": "img:kiro"},
            "secrets": [
                {
                    "name": "DISCORD_BOT_TOKEN",
                    "source": "ssm",
                    "path": "/oab/team/a/discord-token",
                    "autoRestart": False,
                }
            ],
            "env": {"MODE": "default", "OTHER": "1"},
            "capacityProvider": "FARGATE",
            "config": {
                "agent": {"preset": "kiro", "env": {}, "inherit_env": []},
                "discord": {"bot_token": "${DISCORD_BOT_TOKEN}", "allowed_channels": ["1" * 18]},
            },
        },
    }
    assert b["metadata"]["labels"] == {"owner": "me", "tier": "gold", FLEET_LABEL: "fl"}
    assert (b["spec"]["cpu"], b["spec"]["memory"]) == (1024, 2048)
    assert b["spec"]["taskDefinition"] == {"image": "img:claude"}
    assert b["spec"]["env"] == {"MODE": "x", "OTHER": "1"}
    assert [s["name"] for s in b["spec"]["secrets"]] == ["ANTHROPIC_API_KEY", "DISCORD_BOT_TOKEN"]
    assert b["spec"]["config"]["discord"] == {
        "bot_token": "${DISCORD_BOT_TOKEN}",
        "allowed_channels": ["1" * 18],
        "max_bot_turns": 5,
    }
    assert b["spec"]["config"]["agent"]["preset"] == "claude"


def test_fleet_declared_token_secret_wins_over_convention() -> None:
    declared = {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/custom/token"}
    obj = parse_document(fleet([{"name": "a", "secrets": [declared]}]))
    assert isinstance(obj, OABFleet)
    (child,) = expand_fleet(obj)
    assert [s.model_dump(by_alias=True) for s in child.spec.secrets] == [
        {**declared, "autoRestart": False}
    ]


def test_fleet_child_errors_point_into_the_fleet() -> None:
    doc = fleet(
        [
            {"name": "ok"},
            {"name": "bad", "cpu": 300, "config": {"discord": {"allowed_channels": [5]}}},
            {"name": "nomem", "memory": 99},
        ]
    )
    found = issues_of(doc)
    assert "spec.agents[1].cpu" in found
    assert "spec.agents[1].config.discord.allowed_channels[0]" in found
    assert "spec.agents[2].memory" in found
    # A bad value inherited from the defaults is blamed on the defaults.
    doc = fleet([{"name": "a"}], config={"agent": {"preset": "kiro"}, "slack": {"bot_token": "x"}})
    found = issues_of(doc)
    assert "spec.defaults.config.slack.bot_token" in found
    assert "spec.defaults.config.slack.app_token" in found


def test_fleet_missing_resources_and_duplicates() -> None:
    doc = fleet([{"name": "a"}])
    del doc["spec"]["defaults"]["cpu"]
    assert "spec.agents[0].cpu" in issues_of(doc)
    assert (
        "appears twice" in issues_of(fleet([{"name": "a"}, {"name": "a"}]))["spec.agents[1].name"]
    )
    assert "spec.agents" in issues_of(fleet([]))
    both = {"name": "a", "image": "x:1", "taskDefinition": {"image": "y:1"}}
    assert "spec.agents[0].image" in issues_of(fleet([both]))


def test_fleet_without_discord_gets_no_token_secret() -> None:
    slack = {
        "agent": {"preset": "codex"},
        "slack": {"bot_token": "${SB}", "app_token": "${SA}"},
    }
    secrets = [
        {"name": "SB", "source": "ssm", "path": "/sb"},
        {"name": "SA", "source": "ssm", "path": "/sa"},
    ]
    obj = parse_document(fleet([{"name": "s"}], config=slack, secrets=secrets))
    assert isinstance(obj, OABFleet)
    (child,) = expand_fleet(obj)
    assert [s.name for s in child.spec.secrets] == ["SB", "SA"]


def test_models_do_not_mutate_input() -> None:
    doc = service()
    doc["spec"]["config"]["discord"]["channelIds"] = ["123456789012345678"]
    before = copy.deepcopy(doc)
    parse_document(doc)
    assert doc == before


def test_ecs_name_rivals_are_every_other_valid_split_of_the_joined_name() -> None:
    assert ecs_name("a-b", "c") == ecs_name("a", "b-c") == "oab-a-b-c"
    assert ecs_name_rivals("a-b", "c") == [("a", "b-c")]
    assert ecs_name_rivals("a", "b-c-d") == [("a-b", "c-d"), ("a-b-c", "d")]
    assert ecs_name_rivals("team", "bot") == []
    # Splits that leave an invalid label (empty, or a '-' at an end) are no rivals.
    assert ecs_name_rivals("a", "b--c") == []
    for ns, name in ecs_name_rivals("x-y-z", "p-q"):
        assert ecs_name(ns, name) == ecs_name("x-y-z", "p-q")
        assert (ns, name) != ("x-y-z", "p-q")


def test_optional_features_left_unset_do_not_change_the_spec_digest() -> None:
    # Fields added after agents were stored (ingress, exec) are left out of the dump while
    # unset, so an upgrade does not change any stored agent's spec digest (no generation bump).
    import yaml

    from oab.controller.api.document import parse_document

    doc = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "examples" / "kiro-discord.yaml").read_text()
    )
    spec = parse_document(doc).spec.model_dump(mode="json", by_alias=True)
    for added in ("ingress", "exec", "suspend", "schedules", "configToml", "configFrom"):
        assert added not in spec, added
    from oab.controller.api.service import EcsPlatform

    assert "architecture" not in EcsPlatform().model_dump(mode="json", by_alias=True)
