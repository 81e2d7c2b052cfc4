"""Unit tests of ``spec.ingress`` (:mod:`oab.controller.api.ingress`): defaults, bounds, paths."""

from __future__ import annotations

from typing import Any

import pytest

from oab.controller.api.document import parse_document
from oab.controller.api.issues import InvalidDocument
from oab.controller.api.service import OABService


def service(ingress: Any) -> dict[str, Any]:
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": "bot"},
        "spec": {
            "cpu": 512,
            "memory": 1024,
            "taskDefinition": {"image": "ghcr.io/openabdev/openab:kiro"},
            "secrets": [{"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/t"}],
            "config": {
                "agent": {"preset": "kiro"},
                "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
            },
            "ingress": ingress,
        },
    }


def issues_of(doc: Any) -> dict[str, str]:
    with pytest.raises(InvalidDocument) as info:
        parse_document(doc)
    return {issue.dotted: f"{issue.message}; {issue.hint}" for issue in info.value.issues}


def test_defaults_are_upstreams() -> None:
    obj = parse_document(service({"paths": ["/webhook/telegram"]}))
    assert isinstance(obj, OABService)
    ingress = obj.spec.ingress
    assert ingress is not None
    assert (ingress.type, ingress.cloud_map_namespace, ingress.container_port) == (
        "apigateway",
        "oab",
        8080,
    )
    assert ingress.paths == ["/webhook/telegram"]


def test_ingress_is_optional() -> None:
    doc = service(None)
    del doc["spec"]["ingress"]
    obj = parse_document(doc)
    assert isinstance(obj, OABService)
    assert obj.spec.ingress is None


@pytest.mark.parametrize(
    "path",
    ["webhook", "/", "/a/", "//a", "/a//b", "/{proxy+}", "/a b", "/a\n", "/" + "x" * 256],
)
def test_bad_paths_name_the_item(path: str) -> None:
    found = issues_of(service({"paths": ["/ok", path]}))
    assert list(found) == ["spec.ingress.paths[1]"], found
    assert "webhook path" in found["spec.ingress.paths[1]"]


def test_duplicate_and_empty_and_too_many_paths() -> None:
    assert "listed twice" in issues_of(service({"paths": ["/a", "/a"]}))["spec.ingress.paths[1]"]
    assert "spec.ingress.paths" in issues_of(service({"paths": []}))
    assert "spec.ingress.paths" in issues_of(service({"paths": [f"/p{i}" for i in range(21)]}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("containerPort", 0),
        ("containerPort", 65536),
        ("containerPort", "8080"),
        ("cloudMapNamespace", "Oab"),
        ("cloudMapNamespace", "x" * 42),
        ("type", "alb"),
        ("extra", 1),
    ],
)
def test_bad_fields(field: str, value: Any) -> None:
    found = issues_of(service({"paths": ["/a"], field: value}))
    assert f"spec.ingress.{field}" in found, found
