"""``oabctl convert``: one manifest file between ``oab.dev/v1`` and ``oab.dev/v2``.

Design
    Works on the documents as written (YAML data, already validated by the caller), field by
    field, and returns the converted YAML text plus the dotted path of every field the target
    cannot express (the caller exits 1 listing them, or drops them with ``--force``). A field is
    never guessed: ``spec.env``, labels, annotations, SSM parameter *names*, ``autoRestart``,
    ``executionRole`` have no v2 form; an ``aws-sm://NAME#KEY`` shorthand has no offline v1 form
    (its ARN needs ``DescribeSecret``). v1 ``spec.config`` becomes a v2 ``configFrom`` file only
    through its TOML text, so it is reported too (render it with ``oabctl render``).

    Fleets convert field by field with each agent's *effective* values kept: v1 merges an
    agent's ``cpu``/``memory`` and ``secrets`` (by name) into ``defaults``, v2 replaces whole
    fields, so an overriding v2 agent gets the merged value; v2's ``${name}`` (in
    ``bootstrapFrom`` and secret values) has no v1 form, so those values are written out per
    agent. What the target cannot express is named: v1 → v2, inline ``config`` (v2 agents take
    ``configFrom`` files), an agent's own ``networking``/``capacityProvider``/``platform`` (v2's
    ``runtime`` is the template's only), ``env``, labels; v2 → v1, every agent's ``configFrom``
    (v1 fleet agents take inline ``config`` only: keep such fleets in ``oab.dev/v2``, which is
    accepted everywhere). ``ingress`` converts both ways (template ↔ ``defaults``, agent ↔
    agent). v2 has no ``exec``, ``suspend`` or ``schedules`` (upstream calls ECS for them): they
    are named, on single agents and fleets.

Time model: none.
"""

from __future__ import annotations

import re
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
        lost: list[str] = []
        if doc.get("kind") == "OABFleet":
            converted = _fleet_to_v2(doc, lost) if to == API_VERSION_V2 else _fleet_to_v1(doc, lost)
        elif to == API_VERSION_V2:
            converted = _to_v2(doc, lost)
        else:
            converted = _to_v1(doc, lost, source)
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
    secrets = _secrets_to_v2(spec.get("secrets") or [], "spec", lost)
    if secrets:
        out["secrets"] = secrets
    if spec.get("env"):
        lost.append("spec.env")
    out["runtime"] = _runtime_to_v2(spec, "spec", lost)
    if "ingress" in spec:
        out["ingress"] = spec["ingress"]
    _controller_only(spec, "spec", lost)
    return {
        "apiVersion": API_VERSION_V2,
        "kind": "OABService",
        "metadata": {"name": meta["name"], "namespace": _namespace_to_v2(meta, lost)},
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
    secrets = _secrets_to_v1(spec.get("secrets") or {}, "spec", lost)
    if secrets:
        out["secrets"] = secrets
    out.update(_runtime_to_v1(runtime))
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


#: v1 fields that only this controller has (upstream's oabctl calls ECS/EventBridge instead).
_CONTROLLER_ONLY = ("exec", "suspend", "schedules")


def _controller_only(spec: dict[str, Any], at: str, lost: list[str]) -> None:
    for key in _CONTROLLER_ONLY:
        if spec.get(key) is not None and spec.get(key) is not False:
            lost.append(f"{at}.{key} (oab.dev/v2 has no {key})")


def _ingress_and_controller_only(
    v1: dict[str, Any], v2: dict[str, Any], at: str, lost: list[str]
) -> None:
    """A v1 fleet part's ``ingress`` onto its v2 part; its controller-only fields named."""
    if v1.get("ingress") is not None:
        v2["ingress"] = v1["ingress"]
    _controller_only(v1, at, lost)


def _namespace_to_v2(meta: dict[str, Any], lost: list[str]) -> str:
    """The namespace (v1 default ``default``); one v2 cannot take is named in ``lost``."""
    namespace = str(meta.get("namespace", "default"))
    if re.fullmatch(r"[a-z0-9]+", namespace) is None:
        lost.append(f"metadata.namespace ({namespace!r}: v2 namespaces are [a-z0-9]+)")
    return namespace


def _secrets_to_v2(secrets: list[dict[str, Any]], at: str, lost: list[str]) -> dict[str, str]:
    """v1 ``secrets`` (a list) as a v2 map; SSM names and ``autoRestart`` are named in ``lost``."""
    out: dict[str, str] = {}
    for i, secret in enumerate(secrets):
        ref = secret.get("arn") or secret.get("path", "")
        if secret.get("autoRestart"):
            lost.append(f"{at}.secrets[{i}].autoRestart")
        if secret.get("source") == "ssm" and not ref.startswith("arn:"):
            lost.append(f"{at}.secrets[{i}].path (an SSM name; v2 needs an ARN)")
            continue
        out[secret["name"]] = ref
    return out


def _secrets_to_v1(secrets: dict[str, str], at: str, lost: list[str]) -> list[dict[str, Any]]:
    """v2 ``secrets`` (a map) as a v1 list; an ``aws-sm://`` *name* is named in ``lost``."""
    out: list[dict[str, Any]] = []
    for name, written in secrets.items():
        ref = written
        if written.startswith("aws-sm://"):
            secret_id, _, key = written.removeprefix("aws-sm://").rpartition("#")
            if not secret_id.startswith("arn:"):
                lost.append(f"{at}.secrets.{name} (aws-sm:// name: its ARN needs DescribeSecret)")
                continue
            ref = f"{secret_id}:{key}::"
        kind = "ssm" if ":ssm:" in ref else "secretsmanager"
        out.append({"name": name, "source": kind, source_kind_key(kind): ref})
    return out


def _runtime_to_v2(spec: dict[str, Any], at: str, lost: list[str]) -> dict[str, Any]:
    """v1 ``networking``/``capacityProvider``/``platform`` (of a spec or fleet defaults) as a v2
    ``runtime``."""
    ecs = ((spec.get("platform") or {}).get("ecs")) or {}
    if "executionRole" in ecs:
        lost.append(f"{at}.platform.ecs.executionRole")
    if set(spec.get("platform") or {}) - {"ecs"}:
        lost.append(f"{at}.platform (non-ecs keys)")
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
        lost.append(f"{at}.networking (v2 requires runtime.networking; v1 uses the cluster's)")
    return runtime


def _runtime_to_v1(runtime: dict[str, Any]) -> dict[str, Any]:
    """A v2 ``runtime`` as v1 spec (or fleet defaults) fields."""
    if runtime["type"] != "ecs":
        return {"platform": {"k8s": {k: v for k, v in runtime.items() if k != "type"}}}
    out: dict[str, Any] = {"networking": runtime["networking"]}
    if "capacityProvider" in runtime:
        out["capacityProvider"] = runtime["capacityProvider"]
    ecs = {
        k: runtime[src]
        for k, src in (("architecture", "architecture"), ("taskRole", "taskRoleArn"))
        if src in runtime
    }
    if ecs:
        out["platform"] = {"ecs": ecs}
    return out


def _fleet_to_v2(doc: dict[str, Any], lost: list[str]) -> dict[str, Any]:
    """A v1 ``OABFleet`` as a v2 one (see the module docstring for what is named)."""
    meta, spec = doc["metadata"], doc["spec"]
    defaults: dict[str, Any] = spec.get("defaults") or {}
    if meta.get("labels"):
        lost.append("metadata.labels")
    template = _template_to_v2(defaults, first=spec["agents"][0], lost=lost)
    agents = [
        _fleet_agent_to_v2(
            agent, f"spec.agents[{i}]", defaults=defaults, template=template, lost=lost
        )
        for i, agent in enumerate(spec["agents"])
    ]
    return {
        "apiVersion": API_VERSION_V2,
        "kind": "OABFleet",
        "metadata": {"name": meta["name"], "namespace": _namespace_to_v2(meta, lost)},
        "spec": {"template": template, "agents": agents},
    }


def _template_to_v2(
    defaults: dict[str, Any], *, first: dict[str, Any], lost: list[str]
) -> dict[str, Any]:
    """A v1 fleet's ``defaults`` as a v2 ``template`` (its image, else the ``first`` agent's)."""
    image = (defaults.get("taskDefinition") or {}).get("image")
    if image is None:  # v2's template needs one; v1 agents then each name theirs
        image = first.get("image") or first["taskDefinition"]["image"]
    template: dict[str, Any] = {"image": image}
    if "cpu" in defaults and "memory" in defaults:
        template["resources"] = {"cpu": str(defaults["cpu"]), "memory": str(defaults["memory"])}
    if "bootstrapFrom" in defaults:
        template["bootstrapFrom"] = defaults["bootstrapFrom"]
    base_secrets = _secrets_to_v2(defaults.get("secrets") or [], "spec.defaults", lost)
    if base_secrets:
        template["secrets"] = base_secrets
    template["runtime"] = _runtime_to_v2(defaults, "spec.defaults", lost)
    if defaults.get("env"):
        lost.append("spec.defaults.env")
    if defaults.get("config"):
        lost.append("spec.defaults.config (v2 agents take configFrom files)")
    _ingress_and_controller_only(defaults, template, "spec.defaults", lost)
    return template


def _fleet_agent_to_v2(
    agent: dict[str, Any],
    at: str,
    *,
    defaults: dict[str, Any],
    template: dict[str, Any],
    lost: list[str],
) -> dict[str, Any]:
    """One v1 fleet agent as a v2 one: only what differs from ``template``, with v1's merges
    (cpu/memory, secrets by name) made explicit since v2 replaces them whole."""
    out: dict[str, Any] = {"name": agent["name"], "configFrom": f"./{agent['name']}.toml"}
    lost.append(f"{at}.configFrom (write the agent's config.toml there)")
    if agent.get("config"):
        lost.append(f"{at}.config")
    own_image = agent.get("image") or (agent.get("taskDefinition") or {}).get("image")
    if own_image is not None and own_image != template["image"]:
        out["image"] = own_image
    if "cpu" in agent or "memory" in agent:  # v1 merges cpu/memory; v2 replaces both
        cpu, memory = agent.get("cpu", defaults.get("cpu")), agent.get("memory")
        memory = memory if memory is not None else defaults.get("memory")
        out["resources"] = {"cpu": str(cpu), "memory": str(memory)}
    if "bootstrapFrom" in agent:
        out["bootstrapFrom"] = agent["bootstrapFrom"]
    if agent.get("secrets"):  # v1 merges by name; v2 replaces the whole map
        base_secrets = template.get("secrets") or {}
        merged = {**base_secrets, **_secrets_to_v2(agent["secrets"], at, lost)}
        if merged != base_secrets:
            out["secrets"] = merged
    lost.extend(
        f"{at}.{key} (v2's runtime is the template's, for every agent)"
        for key in ("networking", "capacityProvider", "platform")
        if key in agent
    )
    lost.extend(f"{at}.{key}" for key in ("env", "labels") if agent.get(key))
    _ingress_and_controller_only(agent, out, at, lost)
    return out


def _fleet_to_v1(doc: dict[str, Any], lost: list[str]) -> dict[str, Any]:
    """A v2 ``OABFleet`` as a v1 one (see the module docstring for what is named)."""
    meta, spec = doc["metadata"], doc["spec"]
    template: dict[str, Any] = spec["template"]
    defaults: dict[str, Any] = {"taskDefinition": {"image": template["image"]}}
    resources = template.get("resources")
    if resources is not None:
        defaults["cpu"], defaults["memory"] = int(resources["cpu"]), int(resources["memory"])
    bootstrap = template.get("bootstrapFrom")
    if bootstrap is not None and "${name}" not in bootstrap:
        defaults["bootstrapFrom"] = bootstrap
    base = template.get("secrets") or {}
    fixed = {k: v for k, v in base.items() if "${name}" not in v}
    if fixed:
        defaults["secrets"] = _secrets_to_v1(fixed, "spec.template", lost)
    defaults.update(_runtime_to_v1(template["runtime"]))
    if template.get("ingress") is not None:
        defaults["ingress"] = template["ingress"]
    # A templated bootstrapFrom (``${name}``) cannot be a v1 default: each agent gets its own.
    per_agent_bootstrap = bootstrap if "bootstrapFrom" not in defaults else None
    agents = [
        _fleet_agent_to_v1(
            agent,
            f"spec.agents[{i}]",
            bootstrap=per_agent_bootstrap,
            base=base,
            fixed=fixed,
            lost=lost,
        )
        for i, agent in enumerate(spec["agents"])
    ]
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABFleet",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"defaults": defaults, "agents": agents},
    }


def _fleet_agent_to_v1(
    agent: dict[str, Any],
    at: str,
    *,
    bootstrap: str | None,
    base: dict[str, str],
    fixed: dict[str, str],
    lost: list[str],
) -> dict[str, Any]:
    """One v2 fleet agent as a v1 one, ``${name}`` expanded: v2 replaces the secrets map whole,
    v1 merges by name, so only what differs from the defaults (``fixed``) is written."""
    name = agent["name"]
    out: dict[str, Any] = {"name": name}
    lost.append(f"{at}.configFrom (v1 fleet agents take inline config only)")
    if "image" in agent:
        out["image"] = agent["image"]
    if "resources" in agent:
        out["cpu"], out["memory"] = (
            int(agent["resources"]["cpu"]),
            int(agent["resources"]["memory"]),
        )
    own_bootstrap = agent.get("bootstrapFrom", bootstrap)
    if own_bootstrap is not None:
        out["bootstrapFrom"] = own_bootstrap.replace("${name}", name)
    effective = {k: v.replace("${name}", name) for k, v in (agent.get("secrets") or base).items()}
    extra = {k: v for k, v in effective.items() if fixed.get(k) != v}
    if set(fixed) - set(effective):
        lost.append(f"{at}.secrets (drops template secrets; v1 agents add to the defaults)")
    if extra:
        out["secrets"] = _secrets_to_v1(extra, at, lost)
    if agent.get("ingress") is not None:
        out["ingress"] = agent["ingress"]
    return out
