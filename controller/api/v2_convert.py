"""``oabctl convert``: one manifest file between ``oab.dev/v1`` and ``oab.dev/v2``.

Design
    Works on the documents as written (YAML data, already validated by the caller), field by
    field, and returns the converted YAML text plus the dotted path of every field the target
    cannot express (the caller exits 1 listing them, or drops them with ``--force``). A field is
    never guessed: ``spec.env``, labels, annotations, SSM parameter *names*, ``autoRestart``,
    ``executionRole`` have no v2 form; an ``aws-sm://NAME#KEY`` shorthand has no offline v1 form
    (its ARN needs ``DescribeSecret``). v1 ``spec.config`` becomes a v2 ``configFrom`` file only
    through its TOML text, so it is reported too (render it with ``oabctl render``). Fleets are
    not converted (v1 deep-merges ``defaults``, v2 replaces whole ``template`` fields): each is
    reported as a whole.

Time model: none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from oab.controller.api.v2 import API_VERSION_V2

__all__ = ["Converted", "convert_documents"]


@dataclass
class Converted:
    """The converted text and every field path the target version could not express."""

    text: str
    dropped: list[str] = field(default_factory=list)


def convert_documents(path: str, *, to: str) -> Converted:
    """Convert every document of the file at ``path`` (validated beforehand) to ``to``."""
    source = Path(path)
    out: list[dict[str, Any]] = []
    dropped: list[str] = []
    docs = [d for d in yaml.safe_load_all(source.read_text(encoding="utf-8")) if d is not None]
    for index, doc in enumerate(docs, start=1):
        prefix = f"document {index}: " if len(docs) > 1 else ""
        if doc.get("apiVersion") == to:
            out.append(doc)
            continue
        if doc.get("kind") != "OABService":
            dropped.append(f"{prefix}kind {doc.get('kind')} (convert each agent separately)")
            continue
        lost: list[str] = []
        converted = _to_v2(doc, lost) if to == API_VERSION_V2 else _to_v1(doc, lost, source)
        dropped.extend(prefix + p for p in lost)
        out.append(converted)
    text = yaml.safe_dump_all(out, sort_keys=False, allow_unicode=True)
    return Converted(text=text, dropped=dropped)


def _to_v2(doc: dict[str, Any], lost: list[str]) -> dict[str, Any]:
    meta, spec = doc["metadata"], doc["spec"]
    for key in ("labels", "annotations"):
        if meta.get(key):
            lost.append(f"metadata.{key}")
    out: dict[str, Any] = {
        "image": spec["taskDefinition"]["image"],
        "resources": {"cpu": str(spec["cpu"]), "memory": str(spec["memory"])},
    }
    if "configFrom" in spec:
        out["configFrom"] = spec["configFrom"]
    else:
        lost.append("spec.config" if "config" in spec else "spec.configToml")
        out["configFrom"] = "./config.toml"
    if "bootstrapFrom" in spec:
        out["bootstrapFrom"] = spec["bootstrapFrom"]
    secrets: dict[str, str] = {}
    for i, secret in enumerate(spec.get("secrets") or []):
        ref = secret.get("arn") or secret.get("path", "")
        if secret.get("autoRestart"):
            lost.append(f"spec.secrets[{i}].autoRestart")
        if secret.get("source") == "ssm" and not ref.startswith("arn:"):
            lost.append(f"spec.secrets[{i}].path (an SSM name; v2 needs an ARN)")
            continue
        secrets[secret["name"]] = ref
    if secrets:
        out["secrets"] = secrets
    if spec.get("env"):
        lost.append("spec.env")
    ecs = ((spec.get("platform") or {}).get("ecs")) or {}
    for key in ("executionRole",):
        if key in ecs:
            lost.append(f"spec.platform.ecs.{key}")
    if set(spec.get("platform") or {}) - {"ecs"}:
        lost.append("spec.platform (non-ecs keys)")
    networking = ecs.get("networking") or spec.get("networking")
    runtime: dict[str, Any] = {"type": "ecs"}
    capacity = ecs.get("capacityProvider") or spec.get("capacityProvider")
    if capacity:
        runtime["capacityProvider"] = capacity
    if "architecture" in ecs:
        runtime["architecture"] = ecs["architecture"]
    if "taskRole" in ecs:
        runtime["taskRoleArn"] = ecs["taskRole"]
    if networking:
        runtime["networking"] = networking
    else:
        lost.append("spec.networking (v2 requires runtime.networking; v1 uses the cluster's)")
    out["runtime"] = runtime
    if "ingress" in spec:
        out["ingress"] = spec["ingress"]
    return {
        "apiVersion": API_VERSION_V2,
        "kind": "OABService",
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace", "default")},
        "spec": out,
    }


def _to_v1(doc: dict[str, Any], lost: list[str], source: Path) -> dict[str, Any]:
    meta, spec = doc["metadata"], doc["spec"]
    runtime = spec["runtime"]
    out: dict[str, Any] = {
        "cpu": int(spec["resources"]["cpu"]),
        "memory": int(spec["resources"]["memory"]),
        "taskDefinition": {"image": spec["image"]},
    }
    config_from = spec["configFrom"]
    if config_from.startswith("s3://"):
        out["configFrom"] = config_from
    else:
        out["configToml"] = (source.parent / config_from).read_text(encoding="utf-8")
    if "bootstrapFrom" in spec:
        out["bootstrapFrom"] = spec["bootstrapFrom"]
    secrets: list[dict[str, Any]] = []
    for name, written in (spec.get("secrets") or {}).items():
        ref = written
        if written.startswith("aws-sm://"):
            secret_id, _, key = written.removeprefix("aws-sm://").rpartition("#")
            if not secret_id.startswith("arn:"):
                lost.append(f"spec.secrets.{name} (aws-sm:// name: its ARN needs DescribeSecret)")
                continue
            ref = f"{secret_id}:{key}::"
        kind = "ssm" if ":ssm:" in ref else "secretsmanager"
        secrets.append({"name": name, "source": kind, source_kind_key(kind): ref})
    if secrets:
        out["secrets"] = secrets
    if runtime["type"] == "ecs":
        out["networking"] = runtime["networking"]
        if "capacityProvider" in runtime:
            out["capacityProvider"] = runtime["capacityProvider"]
        ecs = {
            k: runtime[src]
            for k, src in (("architecture", "architecture"), ("taskRole", "taskRoleArn"))
            if src in runtime
        }
        if ecs:
            out["platform"] = {"ecs": ecs}
    else:
        out["platform"] = {"k8s": {k: v for k, v in runtime.items() if k != "type"}}
    if "ingress" in spec:
        out["ingress"] = spec["ingress"]
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": out,
    }


def source_kind_key(source: str) -> str:
    """The v1 secret field holding the reference of ``source``."""
    return "path" if source == "ssm" else "arn"
