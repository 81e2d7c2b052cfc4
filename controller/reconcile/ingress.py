"""Reconcile one agent's webhook ingress: observe, plan (:mod:`oab.controller.core.ingress`), act.

Design
    Called by :class:`~oab.controller.reconcile.reconciler.Reconciler` after the ECS service
    was created or updated (:meth:`IngressReconciler.ensure`), when ``spec.ingress`` was removed
    (:meth:`IngressReconciler.remove`, same call) and in the deletion finalizer once the ECS
    service is gone (:meth:`IngressReconciler.remove`). Each run observes the resources through
    :class:`~oab.controller.adapters.ingress.IngressApi`, runs the planned steps in order and
    returns the new recorded ids; the worker commits them with the run's audit row (every
    mutating call is in the run's :class:`~oab.controller.adapters.ecs.CallLog`).

Crash safety (a crash at ANY step)
    - A create that a later step refers to ends the run (``requeue_after=0``): its id is in the
      committed status and audit row before the next run uses it.
    - A run that died after a create and before its commit left no record; the next run finds
      the resource by exact name (the API also by the agent's tags) and records it: nothing is
      created twice. Only one worker reconciles a key at a time (the queue's claim), so two runs
      of one agent never race on its per-agent resources.
    - Shared resources: the namespace create carries a deterministic ``CreatorRequestId``, so two
      agents creating it at once get one namespace. Two agents creating the VPC Link at once can
      make two links (CreateVpcLink has no idempotency token); every agent then picks the same
      one (AVAILABLE first, smallest id), and the spare is harmless and free (README).
    - Teardown deletes only per-agent ids: the recorded ones, plus the agent's API found by name
      and tags and its SRV service found by name in the recorded namespace (what a crashed run
      may have created). Shared resources are never deleted: no agent can remove what another
      still uses, so that race does not exist.

Telegram
    With a path ``/webhook/telegram`` and a ``TELEGRAM_BOT_TOKEN`` secret, the URL is registered
    with ``setWebhook`` once per (URL, secret versions) (upstream's request: form-encoded ``url``
    plus ``secret_token`` when ``TELEGRAM_SECRET_TOKEN`` is declared). Best effort: any failure
    is the ``TelegramWebhook`` condition, never a failed run. The token is registered with
    :func:`~oab.controller.base.redact.register_secret` before use and never appears in a
    message, span or status (errors are rebuilt from the status code and Telegram's
    ``description``, scrubbed).

Time model
    ``now`` (wall clock, from the caller) stamps conditions only. Waiting for a VPC Link is
    ``requeue_after`` (``IngressConfig.link_poll_s``), never a sleep. The Telegram call has a
    timeout (``IngressConfig.telegram_timeout_s``).
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from oab.controller.adapters.ecs import CallLog, EcsAdapter
from oab.controller.adapters.ingress import IngressApi, owner_tags
from oab.controller.api.ingress import TELEGRAM_PATH, IngressSpec
from oab.controller.api.service import OABService, SecretRef
from oab.controller.base.errors import AwsError, TerminalError
from oab.controller.base.names import NAME_TAG, NAMESPACE_TAG
from oab.controller.base.redact import register_secret, scrub
from oab.controller.base.taskcontract import AGENT_CONTAINER
from oab.controller.core.ingress import (
    IngressRecord,
    Observed,
    Step,
    adopt,
    api_name,
    namespace_name,
    plan,
    route_key,
    teardown,
    vpc_link_name,
    webhook_urls,
)
from oab.controller.core.render import service_name
from oab.controller.core.status import AgentStatus, AwsCall, Condition, set_condition
from oab.controller.observability.telemetry import step

__all__ = [
    "DEFAULT_TELEGRAM_API_URL",
    "INGRESS_CONDITIONS",
    "IngressConfig",
    "IngressReconciler",
    "IngressRun",
    "SecretValue",
    "TelegramClient",
    "UrllibTelegram",
]

#: Telegram Bot API base URL (``OAB_TELEGRAM_API_URL`` overrides it; tests use a local fake).
DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
#: Condition types this module sets.
INGRESS_CONDITIONS = ("IngressReady", "VpcLinkSecurityGroups", "TelegramWebhook")
_TOKEN = "TELEGRAM_BOT_TOKEN"
_SECRET_TOKEN = "TELEGRAM_SECRET_TOKEN"


@dataclass(frozen=True, kw_only=True)
class IngressConfig:
    """Ingress timing and the Telegram endpoint.

    - ``link_poll_s`` (default 10.0, upstream's poll): requeue delay while a VPC Link is not
      AVAILABLE (AWS takes minutes). Lower reacts sooner and costs more reads.
    - ``telegram_api_url`` (default :data:`DEFAULT_TELEGRAM_API_URL`).
    - ``telegram_timeout_s`` (default 10.0, upstream's): bound of one setWebhook call, which
      holds a worker thread.
    """

    link_poll_s: float = 10.0
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    telegram_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.link_poll_s <= 0 or self.telegram_timeout_s <= 0:
            raise ValueError("link_poll_s and telegram_timeout_s must be > 0")
        if not self.telegram_api_url.startswith(("https://", "http://")):
            raise ValueError("telegram_api_url must be an http(s) URL")


class SecretValue(Protocol):
    """Reads one secret's value (only for Telegram's setWebhook)."""

    def __call__(self, ref: SecretRef) -> str:
        """The value of ``ref`` (raises an :class:`~oab.controller.base.errors.OabError`)."""


class TelegramClient(Protocol):
    """Calls ``setWebhook``; returns "" on success, else a message holding no secret."""

    def set_webhook(self, *, token: str, url: str, secret_token: str) -> str:
        """Register ``url`` for the bot ``token``."""


class UrllibTelegram:
    """:class:`TelegramClient` over the standard library (one POST, bounded by a timeout)."""

    def __init__(self, *, base_url: str, timeout_s: float) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = timeout_s

    def set_webhook(self, *, token: str, url: str, secret_token: str) -> str:
        form = {"url": url, **({"secret_token": secret_token} if secret_token else {})}
        request = urllib.request.Request(
            f"{self._base}/bot{token}/setWebhook",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as resp:
                body = _json(resp.read(65536))
                code = int(resp.status)
        except urllib.error.HTTPError as exc:
            code, body = exc.code, _json(exc.read(65536))
        except (OSError, ValueError) as exc:
            # Never str(exc) of a URL error: the URL holds the token. The class says enough.
            return f"Telegram setWebhook failed: {type(exc).__name__}"
        if 200 <= code < 300 and body.get("ok") is True:
            return ""
        description = str(body.get("description", ""))[:200]
        return f"Telegram setWebhook failed: HTTP {code}: {description or 'no description'}"


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, kw_only=True)
class IngressRun:
    """What one ingress pass concluded (merged into the run's status by the reconciler)."""

    ingress: Mapping[str, str]
    urls: tuple[str, ...]
    conditions: tuple[Condition, ...]
    #: ``None``: converged; ``0.0``: continue at once (a new id to commit); else a wait.
    requeue_after: float | None


def _spec_hash(spec: IngressSpec, generation: int) -> str:
    # The generation covers networking (it changes with any manifest change).
    body = json.dumps([spec.model_dump(mode="json"), generation], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _drop(conditions: Sequence[Condition], types: Sequence[str]) -> tuple[Condition, ...]:
    return tuple(c for c in conditions if c.type not in types)


def _network(service: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    cfg = (service.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
    return list(cfg.get("subnets") or []), list(cfg.get("securityGroups") or [])


def _attached(service: Mapping[str, Any] | None) -> tuple[str, ...]:
    if service is None:
        return ()
    return tuple(str(r.get("registryArn", "")) for r in service.get("serviceRegistries") or [])


class IngressReconciler:
    """Ingress for every agent of one replica (stateless between runs; thread-safe)."""

    def __init__(
        self,
        *,
        api: IngressApi,
        ecs: EcsAdapter,
        secret_value: SecretValue | None = None,
        telegram: TelegramClient | None = None,
        config: IngressConfig | None = None,
    ) -> None:
        self._api = api
        self._ecs = ecs
        self._secret_value = secret_value
        self._config = config or IngressConfig()
        self._telegram = telegram or UrllibTelegram(
            base_url=self._config.telegram_api_url, timeout_s=self._config.telegram_timeout_s
        )

    # ------------------------------------------------------------------ ensure
    def ensure(
        self,
        *,
        svc: OABService,
        status: AgentStatus,
        describe: Callable[[], Mapping[str, Any] | None],
        resync: bool,
        log: CallLog,
        guard: Callable[[], bool] | None,
        now: str,
    ) -> IngressRun:
        """Bring ``spec.ingress`` about (one pass; see the module doc).

        ``describe`` returns the agent's ECS service; it is called only when this pass looks
        at AWS (not on a converged agent's progress polls).
        """
        spec = svc.spec.ingress
        assert spec is not None
        meta = svc.metadata
        record = IngressRecord.from_map(status.ingress)
        digest = _spec_hash(spec, int(meta.generation or 0))
        if record.spec_hash == digest and not resync and status.webhook_urls:
            # Converged on this spec and nothing asks to look again: no AWS reads (cost).
            return IngressRun(
                ingress=status.ingress,
                urls=status.webhook_urls,
                conditions=status.conditions,
                requeue_after=None,
            )
        service = describe()
        if service is None:
            # Created by this run's apply and not visible yet (or deleted by hand): look again.
            return IngressRun(
                ingress=status.ingress,
                urls=status.webhook_urls,
                conditions=status.conditions,
                requeue_after=self._config.link_poll_s,
            )
        subnets, groups = _network(service)
        if not subnets:
            raise TerminalError(
                "the ECS service has no awsvpc subnets: ingress needs the agent's VPC",
                reason="IngressNeedsSubnets",
            )
        name = service_name(meta.namespace, meta.name)
        with step("ingress.observe", {"oab.service": name}):
            observed = self._observe(
                spec=spec,
                record=record,
                name=name,
                tags=owner_tags(meta.namespace, meta.name),
                subnets=subnets,
                groups=groups,
                service=service,
            )
        _record_adopted(record, observed, name, log)
        steps = plan(spec=spec, observed=observed, security_groups=groups)
        with step("ingress.act", {"oab.ingress.steps": len(steps)}):
            observed = self._act(
                steps,
                observed=observed,
                spec=spec,
                name=name,
                tags=owner_tags(meta.namespace, meta.name),
                subnets=subnets,
                groups=groups,
                service=service,
                log=log,
                guard=guard,
            )
        record = replace(adopt(record, observed), spec_hash="", telegram=record.telegram)
        conds = self._link_condition(status.conditions, observed, groups, now)
        last = steps[-1] if steps else None
        if last is not None and last.barrier:
            waiting = last.kind == "wait"
            conds = set_condition(
                conds,
                type="IngressReady",
                status="False",
                reason="VpcLinkPending" if waiting else "Provisioning",
                message=last.reason if waiting else f"ingress step {last.kind} done; continuing",
                now=now,
            )
            return IngressRun(
                ingress=record.to_map(),
                urls=(),
                conditions=conds,
                requeue_after=self._config.link_poll_s if waiting else 0.0,
            )
        assert observed.api is not None
        urls = webhook_urls(observed.api.endpoint, spec.paths)
        conds = set_condition(
            conds,
            type="IngressReady",
            status="True",
            reason="Ready",
            message=f"{len(urls)} webhook URL(s) routed to port {spec.container_port}",
            now=now,
        )
        record = replace(record, spec_hash=digest)
        record, conds = self._register_telegram(
            svc=svc, status=status, record=record, urls=urls, conds=conds, now=now
        )
        return IngressRun(ingress=record.to_map(), urls=urls, conditions=conds, requeue_after=None)

    def _observe(
        self,
        *,
        spec: IngressSpec,
        record: IngressRecord,
        name: str,
        tags: Mapping[str, str],
        subnets: Sequence[str],
        groups: Sequence[str],
        service: Mapping[str, Any],
    ) -> Observed:
        api = self._api
        vpc = api.vpc_of(subnets[0])
        ns = api.find_namespace(
            name=namespace_name(spec.cloud_map_namespace, vpc), recorded=record.namespace_id
        )
        registry = (
            api.find_registry(namespace_id=ns.id, name=name, recorded=record.registry_id)
            if ns
            else None
        )
        link = api.find_vpc_link(name=vpc_link_name(vpc), recorded=record.vpc_link_id)
        found_api = api.find_api(
            name=api_name(tags[NAMESPACE_TAG], tags[NAME_TAG]), tags=tags, recorded=record.api_id
        )
        integration = (
            api.find_integration(api_id=found_api.id, uri=registry.arn, link_id=link.id)
            if found_api and registry and link
            else None
        )
        return Observed(
            vpc_id=vpc,
            namespace=ns,
            registry=registry,
            ruled_groups=api.ruled_groups(groups=groups, port=spec.container_port),
            vpc_link=link,
            api=found_api,
            integration=integration,
            routes=api.routes(api_id=found_api.id) if found_api else {},
            stage=api.has_stage(api_id=found_api.id) if found_api else False,
            attached=_attached(service),
        )

    def _act(
        self,
        steps: Sequence[Step],
        *,
        observed: Observed,
        spec: IngressSpec,
        name: str,
        tags: Mapping[str, str],
        subnets: Sequence[str],
        groups: Sequence[str],
        service: Mapping[str, Any],
        log: CallLog,
        guard: Callable[[], bool] | None,
    ) -> Observed:
        """Run ``steps`` in order; returns ``observed`` updated with what they made."""
        api = self._api
        obs = observed
        for s in steps:
            if s.kind == "create_namespace":
                api.create_namespace(
                    name=namespace_name(spec.cloud_map_namespace, obs.vpc_id),
                    vpc_id=obs.vpc_id,
                    log=log,
                    guard=guard,
                )
            elif s.kind == "create_registry":
                assert obs.namespace is not None
                obs = replace(
                    obs,
                    registry=api.create_registry(
                        namespace_id=obs.namespace.id, name=name, log=log, guard=guard
                    ),
                )
            elif s.kind == "authorize_rule":
                api.authorize_rule(group=s.target, port=spec.container_port, log=log, guard=guard)
                obs = replace(obs, ruled_groups=obs.ruled_groups | {s.target})
            elif s.kind == "create_vpc_link":
                obs = replace(
                    obs,
                    vpc_link=api.create_vpc_link(
                        name=vpc_link_name(obs.vpc_id),
                        subnets=subnets,
                        groups=groups,
                        log=log,
                        guard=guard,
                    ),
                )
            elif s.kind == "create_api":
                obs = replace(
                    obs,
                    api=api.create_api(
                        name=api_name(tags[NAMESPACE_TAG], tags[NAME_TAG]),
                        tags=tags,
                        log=log,
                        guard=guard,
                    ),
                )
            elif s.kind == "create_integration":
                assert obs.api is not None
                assert obs.registry is not None
                assert obs.vpc_link is not None
                obs = replace(
                    obs,
                    integration=api.create_integration(
                        api_id=obs.api.id,
                        uri=obs.registry.arn,
                        link_id=obs.vpc_link.id,
                        log=log,
                        guard=guard,
                    ),
                )
            elif s.kind == "update_integration":
                assert obs.api is not None
                api.update_integration(
                    api_id=obs.api.id, integration_id=s.target, log=log, guard=guard
                )
            elif s.kind == "delete_route":
                assert obs.api is not None
                api.delete_route(api_id=obs.api.id, route_id=s.target, log=log, guard=guard)
                obs = replace(obs, routes={k: v for k, v in obs.routes.items() if v[0] != s.target})
            elif s.kind == "create_route":
                assert obs.api is not None
                assert obs.integration is not None
                key = route_key(s.target)
                route_id = api.create_route(
                    api_id=obs.api.id,
                    key=key,
                    integration_id=obs.integration.id,
                    log=log,
                    guard=guard,
                )
                target = f"integrations/{obs.integration.id}"
                obs = replace(obs, routes={**obs.routes, key: (route_id, target)})
            elif s.kind == "create_stage":
                assert obs.api is not None
                api.create_stage(api_id=obs.api.id, log=log, guard=guard)
                obs = replace(obs, stage=True)
            elif s.kind == "attach_registry":
                self._ecs.update_service(
                    {
                        "cluster": self._ecs.cluster,
                        "service": str(service["serviceName"]),
                        "serviceRegistries": [
                            {
                                "registryArn": s.target,
                                "containerName": AGENT_CONTAINER,
                                "containerPort": spec.container_port,
                            }
                        ],
                    },
                    log=log,
                    guard=guard,
                )
                obs = replace(obs, attached=(s.target,))
            # "wait" has no call: the run ends and is requeued.
        return obs

    def _link_condition(
        self,
        conditions: Sequence[Condition],
        observed: Observed,
        groups: Sequence[str],
        now: str,
    ) -> tuple[Condition, ...]:
        link = observed.vpc_link
        if link is None:
            return tuple(conditions)
        differ = tuple(sorted(groups)) != link.security_groups
        if not differ and not any(c.type == "VpcLinkSecurityGroups" for c in conditions):
            return tuple(conditions)
        return set_condition(
            conditions,
            type="VpcLinkSecurityGroups",
            status="True" if differ else "False",
            reason="SecurityGroupsDiffer" if differ else "SecurityGroupsMatch",
            message=(
                f"shared VPC Link {link.id} uses {', '.join(link.security_groups) or 'none'}, "
                f"the agent {', '.join(sorted(groups)) or 'none'}: traffic may not reach the "
                "task unless the agent's groups admit the link's"
                if differ
                else ""
            ),
            now=now,
        )

    # ---------------------------------------------------------------- telegram
    def _register_telegram(
        self,
        *,
        svc: OABService,
        status: AgentStatus,
        record: IngressRecord,
        urls: Sequence[str],
        conds: tuple[Condition, ...],
        now: str,
    ) -> tuple[IngressRecord, tuple[Condition, ...]]:
        spec = svc.spec.ingress
        refs = {s.name: s for s in svc.spec.secrets}
        if spec is None or TELEGRAM_PATH not in spec.paths or _TOKEN not in refs:
            return record, _drop(conds, ("TelegramWebhook",))
        url = urls[spec.paths.index(TELEGRAM_PATH)]
        versions = status.secret_versions
        key = hashlib.sha256(
            "|".join([url, versions.get(_TOKEN, ""), versions.get(_SECRET_TOKEN, "")]).encode()
        ).hexdigest()[:16]
        if record.telegram == key:
            return record, conds
        with step("ingress.telegram") as span:
            problem = self._set_webhook(refs, url)
            span.set_attribute("oab.telegram.ok", not problem)
        conds = set_condition(
            conds,
            type="TelegramWebhook",
            status="False" if problem else "True",
            reason="SetWebhookFailed" if problem else "Registered",
            message=scrub(problem) if problem else f"setWebhook registered {url}",
            now=now,
        )
        # A failure is retried by the next run that looks (a resync or a spec change), not in
        # a loop: the reconcile itself succeeded.
        return replace(record, telegram=f"failed:{key}" if problem else key), conds

    def _set_webhook(self, refs: Mapping[str, SecretRef], url: str) -> str:
        if self._secret_value is None:
            return "Telegram setWebhook skipped: this replica cannot read secret values"
        try:
            token = self._secret_value(refs[_TOKEN])
            register_secret(token)
            secret_token = ""
            if _SECRET_TOKEN in refs:
                secret_token = self._secret_value(refs[_SECRET_TOKEN])
                register_secret(secret_token)
        except Exception as exc:  # best effort: any failure is a condition
            return f"Telegram setWebhook skipped: could not read the secret: {type(exc).__name__}"
        return self._telegram.set_webhook(token=token, url=url, secret_token=secret_token)

    # ------------------------------------------------------------------ remove
    def remove(
        self,
        *,
        key: str,
        status: AgentStatus,
        service: Mapping[str, Any] | None,
        log: CallLog,
        guard: Callable[[], bool] | None,
        now: str,
    ) -> IngressRun:
        """Tear down the agent's per-agent ingress resources, in order (one pass).

        ``service`` is the described ECS service (``None`` when it is gone). Returns
        ``requeue_after`` while the SRV service still has instances (ECS deregisters them
        after the detach).
        """
        namespace, name = key.split("/", 1)
        record = IngressRecord.from_map(status.ingress)
        ecs_name = service_name(namespace, name)
        with step("ingress.teardown", {"oab.service": ecs_name}):
            # What a run that crashed before its commit may have made is ours too (module doc).
            found_api = self._api.find_api(
                name=api_name(namespace, name),
                tags=owner_tags(namespace, name),
                recorded=record.api_id,
            )
            registry = (
                self._api.find_registry(
                    namespace_id=record.namespace_id, name=ecs_name, recorded=record.registry_id
                )
                if record.namespace_id
                else None
            )
            record = replace(
                record,
                api_id=found_api.id if found_api else "",
                registry_id=registry.id if registry else "",
            )
            attached = _attached(service)
            for s in teardown(record=record, attached=attached):
                if s.kind == "detach_registry":
                    assert service is not None
                    self._ecs.update_service(
                        {
                            "cluster": self._ecs.cluster,
                            "service": str(service["serviceName"]),
                            "serviceRegistries": [],
                        },
                        log=log,
                        guard=guard,
                    )
                    record = replace(record, attached="")
                elif s.kind == "delete_api":
                    self._api.delete_api(api_id=s.target, log=log, guard=guard)
                    record = replace(
                        record, api_id="", api_endpoint="", integration_id="", stage="", routes={}
                    )
                elif s.kind == "delete_registry":
                    try:
                        self._api.delete_registry(registry_id=s.target, log=log, guard=guard)
                    except AwsError as exc:
                        if exc.code != "ResourceInUse":
                            raise
                        conds = set_condition(
                            status.conditions,
                            type="IngressReady",
                            status="False",
                            reason="TearingDown",
                            message="waiting for ECS to deregister the task from Cloud Map",
                            now=now,
                        )
                        return IngressRun(
                            ingress=record.to_map(),
                            urls=(),
                            conditions=conds,
                            requeue_after=self._config.link_poll_s,
                        )
                    record = replace(record, registry_id="", registry_arn="")
        # Shared ids are dropped from the record, not deleted (module doc).
        return IngressRun(
            ingress={},
            urls=(),
            conditions=_drop(status.conditions, INGRESS_CONDITIONS),
            requeue_after=None,
        )


def _record_adopted(record: IngressRecord, observed: Observed, name: str, log: CallLog) -> None:
    """Record per-agent resources found but not recorded: a run that created them crashed
    before its commit, so no audit row names them (audit completeness, as ECS adoption)."""
    found = [
        ("servicediscovery:CreateService", name, observed.registry, record.registry_id),
        ("apigateway:CreateApi", name, observed.api, record.api_id),
        ("apigateway:CreateIntegration", name, observed.integration, record.integration_id),
    ]
    for action, target, resource, recorded in found:
        if resource is not None and not recorded:
            result = resource.arn or resource.id
            log.add(AwsCall(action=action, target=target, result=result, adopted=True))
