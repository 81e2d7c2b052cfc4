"""``spec.ingress``: inbound HTTPS webhooks for one agent (upstream OpenAB's shape).

Design
    Exactly upstream's ``oab.dev/v2`` ingress block (``operator/schema/oabservice-v2.json``):
    API Gateway HTTP API + VPC Link + Cloud Map in front of the agent's container port. This
    module only parses and validates it; reconciling it (creating the API, routes and the Cloud
    Map service) belongs to the ingress work (issue 14), which may extend this model.

Invariants
    - ``type`` is ``apigateway`` (the only kind upstream supports); ``cloudMapNamespace`` is
      non-empty (default ``oab``); ``paths`` has at least one entry, each starting with ``/``;
      ``containerPort`` is 1..65535 (default 8080).

Time model: none.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

__all__ = ["IngressSpec"]


def _path(value: str) -> str:
    if not value.startswith("/"):
        # The same error shape as oab.controller.api.service.api_error (not imported: the spec
        # there holds this model).
        raise PydanticCustomError(
            "ingress_path",
            "{text}",
            {
                "text": f"{value!r} does not start with '/'",
                "hint": "write a path like /webhook/line",
            },
        )
    return value


class IngressSpec(BaseModel):
    """``spec.ingress``: webhook paths routed to the agent's container port."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", hide_input_in_errors=True
    )

    type: Literal["apigateway"] = "apigateway"
    cloud_map_namespace: Annotated[StrictStr, Field(min_length=1, max_length=1024)] = "oab"
    paths: list[Annotated[StrictStr, Field(max_length=1024), AfterValidator(_path)]] = Field(
        min_length=1, max_length=100
    )
    container_port: StrictInt = Field(default=8080, ge=1, le=65535)
