"""``spec.ingress``: the public HTTPS webhook endpoint of one agent (the same key in v1 and v2).

Design
    Webhook platforms (Telegram, LINE, Teams, Google Chat) POST *into* the task, so such an agent
    needs a public endpoint. ``spec.ingress`` declares it; the reconciler
    (:mod:`oab.controller.reconcile.ingress`) builds API Gateway HTTP API -> VPC Link -> Cloud Map
    -> the task. The shape is upstream's (``operator/schema/oabservice-v2.json``, ``ingress``):
    ``type`` (only ``apigateway``), ``cloudMapNamespace`` (default ``oab``), ``paths`` (one POST
    route each) and ``containerPort`` (default 8080, where OpenAB listens).

Invariants (checked here, before anything is stored)
    - ``paths`` is non-empty, holds at most :data:`MAX_PATHS` unique paths, each at most
      :data:`MAX_PATH_LENGTH` characters of ``/segment/segment``, every segment made of
      ``[A-Za-z0-9._~-]`` (no ``{}`` path parameters, no ``//``, no trailing ``/``): each becomes
      the route key ``POST <path>`` and a URL suffix verbatim. Upstream only requires a leading
      ``/``; the stricter rule keeps route keys exact and URLs unambiguous.
    - ``cloudMapNamespace`` is a DNS label of at most :data:`MAX_NAMESPACE_PREFIX` characters, so
      the shared namespace ``<cloudMapNamespace>-<vpc-id>`` (a VPC id is at most 21 characters)
      is still one DNS label.
    - ``containerPort`` is 1..65535.

Time model
    None: a pure model.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

__all__ = [
    "DEFAULT_CONTAINER_PORT",
    "DEFAULT_NAMESPACE_PREFIX",
    "MAX_NAMESPACE_PREFIX",
    "MAX_PATHS",
    "MAX_PATH_LENGTH",
    "TELEGRAM_PATH",
    "IngressSpec",
]

#: Default ``containerPort``: where OpenAB's webhook server listens (upstream's default).
DEFAULT_CONTAINER_PORT: Final = 8080
#: Default ``cloudMapNamespace`` (upstream's default).
DEFAULT_NAMESPACE_PREFIX: Final = "oab"
#: At most this many paths (routes) per agent; API Gateway allows 300 routes per API.
MAX_PATHS: Final = 20
#: At most this many characters per path.
MAX_PATH_LENGTH: Final = 256
#: ``63 - len("-") - len("vpc-") - 17``: the namespace name stays one DNS label.
MAX_NAMESPACE_PREFIX: Final = 41
#: The path whose URL is registered with Telegram's ``setWebhook`` (upstream's rule).
TELEGRAM_PATH: Final = "/webhook/telegram"

_PATH_RE = re.compile(r"(?:/[A-Za-z0-9._~\-]+)+")
_LABEL_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")


def _error(kind: str, message: str, hint: str, *, path: str = "") -> PydanticCustomError:
    # Same context shape as ``api.service.api_error`` (text, hint, sub-path), which this module
    # cannot import: ``api.service`` imports this module for ``OABServiceSpec.ingress``.
    ctx: dict[str, Any] = {"text": message, "hint": hint}
    if path:
        ctx["path"] = path
    return PydanticCustomError(kind, "{text}", ctx)


def _paths(value: list[str]) -> list[str]:
    seen: set[str] = set()
    for i, path in enumerate(value):
        if len(path) > MAX_PATH_LENGTH or _PATH_RE.fullmatch(path) is None:
            raise _error(
                "ingress_path",
                f"path {path[:MAX_PATH_LENGTH]!r} is not a webhook path",
                "write '/segment/segment' (letters, digits, '.', '_', '~', '-'; at most "
                f"{MAX_PATH_LENGTH} characters; no trailing '/'), e.g. {TELEGRAM_PATH}",
                path=f"[{i}]",
            )
        if path in seen:
            raise _error(
                "ingress_path_duplicate",
                f"path {path!r} is listed twice",
                "list each path once: each becomes one route",
                path=f"[{i}]",
            )
        seen.add(path)
    return value


def _namespace_prefix(value: str) -> str:
    if len(value) > MAX_NAMESPACE_PREFIX or _LABEL_RE.fullmatch(value) is None:
        raise _error(
            "ingress_namespace",
            f"{value[:64]!r} is not a Cloud Map namespace prefix",
            f"use 1-{MAX_NAMESPACE_PREFIX} lowercase letters, digits and '-' (the namespace is "
            "'<cloudMapNamespace>-<vpc-id>'), e.g. oab",
        )
    return value


class IngressSpec(BaseModel):
    """``spec.ingress``: API Gateway HTTP API routes ``POST <path>`` to ``containerPort``."""

    # The same configuration as ``api.service.ApiModel`` (camelCase aliases, unknown keys
    # refused, inputs hidden from errors), repeated because that module imports this one.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        hide_input_in_errors=True,
    )

    type: Literal["apigateway"] = "apigateway"
    cloud_map_namespace: Annotated[StrictStr, AfterValidator(_namespace_prefix)] = (
        DEFAULT_NAMESPACE_PREFIX
    )
    paths: Annotated[
        list[StrictStr], Field(min_length=1, max_length=MAX_PATHS), AfterValidator(_paths)
    ]
    container_port: StrictInt = Field(default=DEFAULT_CONTAINER_PORT, ge=1, le=65535)
